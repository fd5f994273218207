//! The account's own resources, read-only: the Account (`GET /Accounts/{Sid}.json`), its
//! IncomingPhoneNumbers and its OutgoingCallerIds (verified caller IDs), each in the JSON
//! shape Twilio's API reference documents, lists paged as the Calls list is.

use std::sync::Arc;

use serde_json::{Value, json};

use super::super::{NumberSetup, Shared, rfc2822};
use super::{API, ApiError, Params, Reply, formatted, paging};

/// `GET /Accounts/{Sid}.json`. Twilio's answer carries the account's auth token, so this one
/// does too: a client that printed the resource would leak it, and a test can tell.
pub(super) fn fetch(shared: &Arc<Shared>, method: &str) -> Result<Reply, ApiError> {
    if method != "GET" {
        return Err(not_allowed());
    }
    let sid = &shared.config.account_sid;
    let base = format!("/{API}/Accounts/{sid}");
    let created = rfc2822(shared.epoch.1);
    let sub: serde_json::Map<String, Value> = [
        ("calls", "Calls"),
        ("incoming_phone_numbers", "IncomingPhoneNumbers"),
        ("outgoing_caller_ids", "OutgoingCallerIds"),
        ("recordings", "Recordings"),
        ("notifications", "Notifications"),
        ("applications", "Applications"),
        ("available_phone_numbers", "AvailablePhoneNumbers"),
        ("balance", "Balance"),
        ("usage", "Usage"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), Value::String(format!("{base}/{v}.json"))))
    .collect();
    Ok(Reply {
        status: 200,
        body: json!({
            "auth_token": shared.config.auth_token,
            "date_created": created,
            "date_updated": created,
            "friendly_name": "Simulated account",
            "owner_account_sid": sid,
            "sid": sid,
            "status": "active",
            "subresource_uris": sub,
            "type": "Full",
            "uri": format!("{base}.json"),
        }),
        call_sid: None,
    })
}

/// `GET /Accounts/{Sid}/IncomingPhoneNumbers.json`.
pub(super) fn incoming_numbers(shared: &Arc<Shared>, p: &Params) -> Result<Reply, ApiError> {
    let filter = p.get("PhoneNumber");
    let setups = shared.lock().number_setup.clone();
    let mut numbers: Vec<(&String, &String)> = shared
        .owned
        .iter()
        .filter(|(number, _)| filter.is_none_or(|f| partial_match(f, number)))
        .collect();
    numbers.sort();
    let items: Vec<Value> = numbers
        .into_iter()
        .map(|(number, sid)| {
            let setup = setups.get(number).cloned().unwrap_or_default();
            incoming_number(shared, number, sid, &setup)
        })
        .collect();
    page(
        shared,
        p,
        "IncomingPhoneNumbers",
        "incoming_phone_numbers",
        items,
    )
}

/// `GET /Accounts/{Sid}/OutgoingCallerIds.json`.
pub(super) fn caller_ids(shared: &Arc<Shared>, p: &Params) -> Result<Reply, ApiError> {
    let filter = p.get("PhoneNumber").map(super::normalized);
    let mut ids: Vec<(&String, &String)> = shared
        .verified
        .iter()
        .filter(|(number, _)| filter.as_ref().is_none_or(|f| f == *number))
        .collect();
    ids.sort();
    let account = &shared.config.account_sid;
    let created = rfc2822(shared.epoch.1);
    let items: Vec<Value> = ids
        .into_iter()
        .map(|(number, sid)| {
            json!({
                "account_sid": account,
                "date_created": created,
                "date_updated": created,
                "friendly_name": formatted(number),
                "phone_number": number,
                "sid": sid,
                "uri": format!("/{API}/Accounts/{account}/OutgoingCallerIds/{sid}.json"),
            })
        })
        .collect();
    page(shared, p, "OutgoingCallerIds", "outgoing_caller_ids", items)
}

fn incoming_number(shared: &Shared, number: &str, sid: &str, setup: &NumberSetup) -> Value {
    let account = &shared.config.account_sid;
    let created = rfc2822(shared.epoch.1);
    let base = format!("/{API}/Accounts/{account}/IncomingPhoneNumbers/{sid}");
    json!({
        "account_sid": account,
        "address_requirements": "none",
        "address_sid": null,
        "api_version": API,
        "beta": false,
        "capabilities": {"voice": setup.voice, "sms": true, "mms": true, "fax": false},
        "date_created": created,
        "date_updated": created,
        "emergency_status": "Inactive",
        "emergency_address_sid": null,
        "emergency_address_status": "unregistered",
        "friendly_name": formatted(number),
        "identity_sid": null,
        "origin": "twilio",
        "phone_number": number,
        "sid": sid,
        "sms_application_sid": "",
        "sms_fallback_method": "POST",
        "sms_fallback_url": "",
        "sms_method": "POST",
        "sms_url": "",
        "status_callback": "",
        "status_callback_method": "POST",
        "trunk_sid": null,
        "uri": format!("{base}.json"),
        "voice_receive_mode": "voice",
        "voice_application_sid": "",
        "voice_caller_id_lookup": false,
        "voice_fallback_method": "POST",
        "voice_fallback_url": "",
        "voice_method": setup.voice_method,
        "voice_url": setup.voice_url,
        "bundle_sid": null,
        "status": "in-use",
        "subresource_uris": {"assigned_add_ons": format!("{base}/AssignedAddOns.json")},
    })
}

/// Twilio's `PhoneNumber` filter on IncomingPhoneNumbers: the digits given appear in the
/// number, in a row, `*` standing for any one digit.
fn partial_match(filter: &str, number: &str) -> bool {
    let wanted: Vec<char> = filter
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '*')
        .collect();
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    if wanted.is_empty() {
        return true;
    }
    digits
        .windows(wanted.len())
        .any(|w| w.iter().zip(&wanted).all(|(d, f)| *f == '*' || d == f))
}

/// One page of a list, with the paging fields every 2010-04-01 list carries.
fn page(
    shared: &Shared,
    p: &Params,
    resource: &str,
    key: &str,
    items: Vec<Value>,
) -> Result<Reply, ApiError> {
    let (page_size, page) = paging(p)?;
    let total = items.len();
    let start = page.saturating_mul(page_size);
    let shown: Vec<Value> = items.into_iter().skip(start).take(page_size).collect();
    let count = shown.len();
    let has_next = total > start.saturating_add(count) && count > 0;
    let base = format!(
        "/{API}/Accounts/{}/{resource}.json",
        shared.config.account_sid
    );
    let page_uri = |n: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(number) = p.get("PhoneNumber") {
            q.append_pair("PhoneNumber", number);
        }
        q.append_pair("PageSize", &page_size.to_string());
        q.append_pair("Page", &n.to_string());
        format!("{base}?{}", q.finish())
    };
    let mut body = json!({
        "start": start,
        "end": if count == 0 { start } else { start + count - 1 },
        "page": page,
        "page_size": page_size,
        "uri": page_uri(page),
        "first_page_uri": page_uri(0),
        "next_page_uri": if has_next { Value::String(page_uri(page + 1)) } else { Value::Null },
        "previous_page_uri": if page > 0 { Value::String(page_uri(page - 1)) } else { Value::Null },
    });
    body[key] = Value::Array(shown);
    Ok(Reply {
        status: 200,
        body,
        call_sid: None,
    })
}

fn not_allowed() -> ApiError {
    ApiError {
        status: 405,
        code: 20004,
        message: "Method not allowed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::partial_match;

    #[test]
    fn the_phone_number_filter_matches_partial_numbers_and_wildcards() {
        assert!(partial_match("+15005550006", "+15005550006"));
        assert!(partial_match("555", "+15005550006"));
        assert!(partial_match("+1500***0006", "+15005550006"));
        assert!(!partial_match("+15005550007", "+15005550006"));
        assert!(!partial_match("+150055500061", "+15005550006"));
    }
}
