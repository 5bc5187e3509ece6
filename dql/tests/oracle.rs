//! Every oracle fixture (statements with the answers Ditto 5.1.0 gave) runs through the
//! in-memory store and must give the same items, mutated ids and error codes.

mod common;

/// Cases where bigpeer deliberately differs from the SDK, with the reason.
const DEVIATIONS: &[(&str, &str)] = &[
    (
        "e6",
        "`select` is a reserved word: bigpeer rejects it unquoted (the SDK accepts it)",
    ),
    (
        "r5",
        "`from` is a reserved word: bigpeer rejects it unquoted (the SDK accepts it as a field)",
    ),
    (
        "q29",
        "documents found by several `_id =` lookups come back in an order of the SDK's index scans",
    ),
    (
        "q30",
        "the SDK returns nothing for an `_id IN` list that mixes strings and numbers",
    ),
    (
        "str-doubled-quote",
        "'it''s' (a doubled quote inside a string) is accepted, as in SQL; the SDK rejects it",
    ),
    (
        "x-unicode-field",
        "unquoted identifiers may use any letters (héllo); the SDK takes only ASCII ones unquoted",
    ),
    (
        "x-semicolon",
        "one trailing `;` is accepted (curl and psql habits); the SDK rejects it",
    ),
    (
        "x-sys-colls-after-delete",
        "system:collections lists the collections that hold live documents; the SDK lists every \
         collection written to, even when all its documents are deleted",
    ),
    (
        "x-sys-colls-after-evict",
        "system:collections lists the collections that hold live documents; the SDK keeps \
         listing a collection whose documents were all evicted",
    ),
    (
        "tombstone",
        "TOMBSTONE FROM is the Big Peer spelling of DELETE; the SDK rejects it",
    ),
];

#[test]
fn oracle_fixtures_pass_through_the_evaluator() {
    let cases = common::load_cases();
    assert!(cases.len() >= 25, "fixtures are missing");
    let mut failures = Vec::new();
    let mut deviations_seen = 0;
    for case in &cases {
        let result = common::run_case(case);
        let deviation = DEVIATIONS.iter().any(|(n, _)| *n == case.name);
        match (result, deviation) {
            (Ok(()), false) => {}
            (Err(_), true) => deviations_seen += 1,
            (Ok(()), true) => failures.push(format!(
                "{}: listed as a deviation but now agrees",
                case.name
            )),
            (Err(e), false) => failures.push(format!(
                "{} ({}): {}\n    {}",
                case.name, case.file, case.step.statement, e
            )),
        }
    }
    assert_eq!(deviations_seen, DEVIATIONS.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
