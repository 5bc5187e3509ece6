//! The whole pipeline (parse, check, compile, evaluate) never panics: on arbitrary text, and on
//! token soup made of DQL's own words and symbols (which reaches much deeper into the parser).

use std::collections::BTreeMap;

use bigpeer_dql::memstore::MemStore;
use bigpeer_schema::Value;
use proptest::prelude::*;

const PIECES: &[&str] = &[
    "SELECT",
    "DISTINCT",
    "*",
    "FROM",
    "cars",
    "c",
    "COLLECTION",
    "(",
    ")",
    "n",
    "COUNTER",
    "MAP",
    "AS",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "ORDER",
    "ASC",
    "DESC",
    "LIMIT",
    "OFFSET",
    "INSERT",
    "INTO",
    "DOCUMENTS",
    "VALUES",
    "ON",
    "ID",
    "CONFLICT",
    "DO",
    "UPDATE",
    "NOTHING",
    "SET",
    "UNSET",
    "APPLY",
    "PN_INCREMENT",
    "INCREMENT",
    "RESTART",
    "WITH",
    "DELETE",
    "EVICT",
    "ALTER",
    "SYSTEM",
    "RESET",
    "ALL",
    "SHOW",
    "EXPLAIN",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "MISSING",
    "UNKNOWN",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "TRUE",
    "false",
    "=",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "/",
    "%",
    "||",
    ",",
    ".",
    "[",
    "]",
    "{",
    "}",
    ":",
    ":p",
    ":arr",
    "'x'",
    "\"y\"",
    "`q r`",
    "0",
    "1",
    "2.5",
    "-7",
    "9223372036854775807",
    "18446744073709551615",
    "1e308",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "upper",
    "concat",
    "coalesce",
    "decode",
    "type",
    "object_keys",
    "array_contains",
    "deserialize_json",
    "abs",
    "ceil",
    "_id",
    "a.b",
    "system",
    ";",
    "/*+ {} */",
    "--x\n",
];

fn args() -> BTreeMap<String, Value> {
    let mut a = BTreeMap::new();
    a.insert("p".to_owned(), Value::Int(3));
    a.insert(
        "arr".to_owned(),
        Value::Array(vec![Value::Int(1), Value::String("x".into())]),
    );
    a
}

fn run_everything(text: &str) {
    let mut store = MemStore::new();
    let setup = "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'n': 1, 'b': {'c': [1, 'x']}}), ({'_id': 2, 'n': 'x'})";
    store.execute(setup, &BTreeMap::new()).expect("setup");
    if let Ok(stmt) = bigpeer_dql::parse(text) {
        // The printed statement parses again.
        let printed = stmt.to_string();
        let again = bigpeer_dql::parse(&printed).expect("printed statement parses");
        assert_eq!(again.to_string(), printed);
        for strict_mode in [false, true] {
            let opts = bigpeer_dql::plan::PlanOptions { strict_mode };
            if let Ok(plan) = bigpeer_dql::plan::check_with(&stmt, &args(), &opts) {
                let _ = bigpeer_dql::sql::compile(&plan);
            }
        }
    }
    let _ = store.clone().execute(text, &args());
    // The same in strict mode, where statements see typed views and write typed components.
    store
        .execute("ALTER SYSTEM SET DQL_STRICT_MODE = true", &BTreeMap::new())
        .expect("strict");
    let _ = store.execute(text, &args());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        run_everything(&text);
    }

    #[test]
    fn token_soup_never_panics(idx in proptest::collection::vec(0..PIECES.len(), 0..24)) {
        let text: Vec<&str> = idx.iter().map(|i| PIECES[*i]).collect();
        run_everything(&text.join(" "));
    }

    #[test]
    fn statement_prefixes_never_panic(cut in 0usize..200) {
        let full = "SELECT DISTINCT c.n AS x, COUNT(DISTINCT b.c[0]) FROM COLLECTION cars (n COUNTER) AS c \
                    WHERE n BETWEEN 1 AND :p AND NOT (b.c IS MISSING) OR n IN :arr GROUP BY c.n \
                    HAVING COUNT(*) > 0 ORDER BY x DESC LIMIT 5 OFFSET 1";
        let end = full.char_indices().nth(cut).map_or(full.len(), |(i, _)| i);
        run_everything(&full[..end]);
    }
}

#[test]
fn long_chains_and_the_deepest_expressions_run_everywhere() {
    // The limits (1000 operators, 24 levels with AND/OR chains counted once) keep every stage
    // far from the test thread's small stack.
    let terms: Vec<String> = (0..500).map(|i| format!("n = {i}")).collect();
    run_everything(&format!("SELECT * FROM cars WHERE {}", terms.join(" OR ")));
    let list: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
    run_everything(&format!(
        "SELECT * FROM cars WHERE n IN ({})",
        list.join(", ")
    ));
    let concat: Vec<String> = (0..24).map(|_| "'x'".to_owned()).collect();
    run_everything(&format!("SELECT {} AS s FROM cars", concat.join(" || ")));
    let nested = format!(
        "SELECT * FROM cars WHERE {}n{} = 1",
        "abs(".repeat(22),
        ")".repeat(22)
    );
    run_everything(&nested);
    let deep = format!("{}n{}", "abs(".repeat(21), ")".repeat(21));
    run_everything(&format!(
        "SELECT DISTINCT c, MAX({deep}) AS m FROM cars WHERE {deep} > 0 GROUP BY c HAVING MIN({deep}) > 0 ORDER BY MAX({deep}) DESC LIMIT 3"
    ));
    let too_deep = format!(
        "SELECT * FROM cars WHERE {}n{} = 1",
        "abs(".repeat(30),
        ")".repeat(30)
    );
    assert!(bigpeer_dql::parse(&too_deep).is_err());
    let too_many: Vec<String> = (0..600).map(|i| format!("n = {i}")).collect();
    assert!(bigpeer_dql::parse(&format!(
        "SELECT * FROM cars WHERE {}",
        too_many.join(" OR ")
    ))
    .is_err());
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "SELECT * FROM cars WHERE {}1{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(bigpeer_dql::parse(&deep).is_err());
    let deep_not = format!("SELECT * FROM cars WHERE {}true", "NOT ".repeat(5000));
    assert!(bigpeer_dql::parse(&deep_not).is_err());
    let deep_arr = format!("SELECT {}1{} FROM cars", "[".repeat(5000), "]".repeat(5000));
    assert!(bigpeer_dql::parse(&deep_arr).is_err());
}
