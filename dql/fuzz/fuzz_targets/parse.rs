//! Parses arbitrary text; a parsed statement must print back to text that parses to the same
//! statement, and checking and compiling it (strict mode off and on) must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(stmt) = bigpeer_dql::parse(text) else { return };
    let printed = stmt.to_string();
    let again = bigpeer_dql::parse(&printed).expect("a printed statement parses");
    assert_eq!(again.to_string(), printed, "printing is stable");
    for strict_mode in [false, true] {
        let opts = bigpeer_dql::plan::PlanOptions { strict_mode };
        if let Ok(plan) = bigpeer_dql::plan::check_with(&stmt, &Default::default(), &opts) {
            let _ = bigpeer_dql::sql::compile(&plan);
        }
    }
});
