//! How long a large campaign takes to start: read a CSV of 100,000 leads (phone normalisation,
//! time zones, variables), import it into the campaign database, and plan the first dials (the
//! due query plus the do-not-call and calling-window checks for a full set of lines).
//! Run: `cargo bench --bench import` (or `-- 250000` for another size). Under `cargo test` it
//! runs on 2,000 leads as a smoke test.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use chrono::Utc;
use dialer::campaign::dnc::DncList;
use dialer::campaign::leads;
use dialer::campaign::store::Store;
use dialer::campaign::window::CallingWindow;
use dialer::phone::E164;
use std::io::Write;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench");
    let n: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 100_000 } else { 2_000 });
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("leads.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
        writeln!(f, "phone,first_name,appointment,timezone").unwrap();
        let zones = [
            "America/New_York",
            "America/Chicago",
            "America/Los_Angeles",
            "",
        ];
        // N11 codes and premium-rate ones are refused by default, so they are left out.
        let dialable = |c: &usize| c % 100 != 11 && !matches!(c, 900 | 976);
        let areas: Vec<usize> = (212..1000).filter(dialable).collect();
        let exchanges: Vec<usize> = (200..1000).filter(dialable).collect();
        for i in 0..n {
            // Distinct valid NANP numbers in national-looking formats, as CSVs really hold them.
            writeln!(
                f,
                "+1 ({}) {}-{:04},Lead {i},Monday at 10:30,{}",
                areas[(i / 10_000 / exchanges.len()) % areas.len()],
                exchanges[(i / 10_000) % exchanges.len()],
                i % 10_000,
                zones[i % zones.len()]
            )
            .unwrap();
        }
    }

    let t0 = Instant::now();
    let file = leads::load(&csv, None).expect("leads load");
    let parsed = t0.elapsed();
    assert_eq!(
        file.leads.len(),
        n,
        "{:?}",
        file.bad_rows.first().map(|b| &b.reason)
    );

    let t1 = Instant::now();
    let mut store = Store::open(&dir.path().join("leads.db")).expect("store");
    store.import(&file.leads, Utc::now()).expect("import");
    let imported = t1.elapsed();

    let t2 = Instant::now();
    let dnc = DncList::load(&[dir.path().join("dnc.txt")], None).expect("dnc");
    let window = CallingWindow::default();
    // A Tuesday afternoon in the US, so the window check does real work whatever day it runs.
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T19:00:00Z")
        .expect("a valid instant")
        .with_timezone(&Utc);
    let first = store.due(now, 200, &[]).expect("due");
    let mut open = 0;
    for lead in &first {
        let phone = E164::parse(&lead.phone).expect("stored numbers are valid");
        let tz = lead
            .timezone
            .as_deref()
            .and_then(|z| z.parse().ok())
            .unwrap_or(chrono_tz::America::New_York);
        if !dnc.contains(&phone) && window.is_open(tz, now) {
            open += 1;
        }
    }
    let planned = t2.elapsed();

    // Importing the same file again is what a resumed campaign does.
    let t3 = Instant::now();
    store.import(&file.leads, Utc::now()).expect("re-import");
    let reimported = t3.elapsed();

    println!(
        "import: {n} leads: parse {:.2} s ({:.0} leads/s), import {:.2} s, plan the first 200 dials {:.1} ms ({open} in their window now), re-import on resume {:.2} s",
        parsed.as_secs_f64(),
        n as f64 / parsed.as_secs_f64(),
        imported.as_secs_f64(),
        planned.as_secs_f64() * 1000.0,
        reimported.as_secs_f64(),
    );
}
