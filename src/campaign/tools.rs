//! The tools every campaign call gives the agent: `record_outcome`, limited to the campaign's
//! dispositions, and `opt_out`, which puts the number on the do-not-call list the moment it is
//! asked (durably, before the agent even answers), so an opt-out survives whatever happens to
//! the call or the process afterwards.

use super::dnc::DncList;
use crate::call::tools::{RemoteTools, ToolHandler, ToolReply, ToolSpec};
use crate::events::Disposition;
use crate::phone::E164;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

pub(crate) const RECORD_OUTCOME: &str = "record_outcome";
pub(crate) const OPT_OUT: &str = "opt_out";

/// What `opt_out` tells the agent once the opt-out is recorded.
pub(crate) fn opt_out_reply() -> ToolReply {
    ToolReply {
        result: json!({
            "ok": true,
            "next": "The number will not be called again. Apologise briefly, say goodbye and end the call."
        }),
        opted_out: true,
        ..ToolReply::default()
    }
}

pub(crate) struct CampaignTools {
    to: E164,
    dispositions: Arc<[String]>,
    dnc: Arc<Mutex<DncList>>,
    /// `[dtmf]`: keys to dispositions.
    keys: Vec<(String, String)>,
    /// `[transfer] on`: dispositions that hand the call to a person.
    transfer_on: Vec<String>,
}

impl CampaignTools {
    pub(crate) fn new(to: E164, dispositions: Arc<[String]>, dnc: Arc<Mutex<DncList>>) -> Self {
        Self {
            to,
            dispositions,
            dnc,
            keys: Vec::new(),
            transfer_on: Vec::new(),
        }
    }

    /// The campaign's `[dtmf]` table and `[transfer] on` list.
    pub(crate) fn with_keys(
        mut self,
        keys: Vec<(String, String)>,
        transfer_on: Vec<String>,
    ) -> Self {
        self.keys = keys;
        self.transfer_on = transfer_on;
        self
    }

    fn record_outcome(&self, args: &Value) -> ToolReply {
        let Some(name) = args.get("disposition").and_then(Value::as_str) else {
            return ToolReply::error(format!(
                "missing 'disposition'; use one of: {}",
                self.dispositions.join(", ")
            ));
        };
        if !self.dispositions.iter().any(|d| d == name) {
            return ToolReply::error(format!(
                "'{name}' is not a disposition of this campaign; use one of: {}",
                self.dispositions.join(", ")
            ));
        }
        let notes = args
            .get("notes")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(2000)
            .collect::<String>();
        // The bridge hands the call over (and tells the agent to announce it) when the call
        // has somewhere to transfer to.
        let transfer = self
            .transfer_on
            .iter()
            .any(|d| d == name)
            .then(|| format!("disposition {name}"));
        ToolReply {
            result: json!({ "recorded": name }),
            disposition: Some(Disposition {
                name: name.to_string(),
                notes,
            }),
            transfer,
            ..ToolReply::default()
        }
    }

    fn opt_out(&self) -> ToolReply {
        opt_out(&self.dnc, &self.to)
    }
}

/// Put `number` on the do-not-call list, on disk before the agent hears back. Shared by
/// campaigns and inbound calls (`dialer serve`).
pub(crate) fn opt_out(dnc: &Mutex<DncList>, number: &E164) -> ToolReply {
    let written = dnc
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(number, "opted out during a call");
    if let Err(e) = &written {
        // A campaign still records the opt-out in its database, and the outcome of an inbound
        // call says so; the list file could not be written, which the operator must hear about.
        tracing::error!(error = %e, "cannot write the do-not-call list");
    }
    opt_out_reply()
}

/// The `opt_out` tool as the agent is told of it.
pub(crate) fn opt_out_spec() -> ToolSpec {
    ToolSpec {
        name: OPT_OUT.into(),
        description:
            "The person asked not to be called again: put this number on the do-not-call list."
                .into(),
        parameters: json!({ "type": "object", "properties": {} }),
    }
}

impl ToolHandler for CampaignTools {
    fn remote(&self) -> Option<RemoteTools> {
        Some(RemoteTools {
            dispositions: self.dispositions.to_vec(),
            opt_out: true,
            keys: self.keys.clone(),
            transfer_on: self.transfer_on.clone(),
        })
    }

    fn specs(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: RECORD_OUTCOME.into(),
                description: "Record how the call went, once the outcome is clear.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "disposition": {
                            "type": "string",
                            "enum": &*self.dispositions,
                            "description": "The outcome of the call."
                        },
                        "notes": {
                            "type": "string",
                            "description": "A short note for the team (optional)."
                        }
                    },
                    "required": ["disposition"]
                }),
            },
            opt_out_spec(),
        ]
    }

    fn call(&self, name: &str, arguments: &Value) -> Option<ToolReply> {
        match name {
            RECORD_OUTCOME => Some(self.record_outcome(arguments)),
            OPT_OUT => Some(self.opt_out()),
            _ => None,
        }
    }

    fn keypad(&self, keys: &str) -> Option<Disposition> {
        self.keys
            .iter()
            .find(|(k, _)| k == keys)
            .map(|(_, name)| Disposition {
                name: name.clone(),
                notes: format!("pressed {keys} on the keypad"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(dir: &std::path::Path) -> (CampaignTools, Arc<Mutex<DncList>>) {
        let dnc = DncList::load(&[dir.join("dnc.txt")], None).unwrap();
        let dnc = Arc::new(Mutex::new(dnc));
        let t = CampaignTools::new(
            E164::parse("+12025550106").unwrap(),
            vec!["confirmed".to_string(), "reschedule".to_string()].into(),
            dnc.clone(),
        );
        (t, dnc)
    }

    #[test]
    fn record_outcome_accepts_only_the_campaigns_dispositions() {
        let dir = tempfile::tempdir().unwrap();
        let (t, _) = tools(dir.path());
        let ok = t
            .call(
                RECORD_OUTCOME,
                &json!({"disposition": "confirmed", "notes": "Tuesday"}),
            )
            .unwrap();
        assert!(!ok.is_error);
        assert_eq!(ok.disposition.unwrap().notes, "Tuesday");
        let bad = t
            .call(RECORD_OUTCOME, &json!({"disposition": "sold"}))
            .unwrap();
        assert!(bad.is_error && bad.disposition.is_none());
        assert!(bad.result["error"].as_str().unwrap().contains("reschedule"));
        assert!(t.call(RECORD_OUTCOME, &json!({})).unwrap().is_error);
        assert!(t.call("transfer", &json!({})).is_none());
        let specs = t.specs();
        assert_eq!(
            specs[0].parameters["properties"]["disposition"]["enum"],
            json!(["confirmed", "reschedule"])
        );
    }

    #[test]
    fn opt_out_is_on_disk_before_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let (t, dnc) = tools(dir.path());
        let reply = t.call(OPT_OUT, &json!({})).unwrap();
        assert!(reply.opted_out && !reply.is_error);
        let number = E164::parse("+12025550106").unwrap();
        assert!(dnc.lock().unwrap().contains(&number));
        let fresh = DncList::load(&[dir.path().join("dnc.txt")], None).unwrap();
        assert!(fresh.contains(&number));
    }
}
