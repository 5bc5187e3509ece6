//! Parse → print → parse gives the same tree (compared through its printed form, which drops
//! positions), for a list of statements covering the grammar.

use bigpeer_dql::parse;

const STATEMENTS: &[&str] = &[
    "SELECT * FROM cars",
    "SELECT DISTINCT color FROM cars",
    "SELECT * FROM cars WHERE n >= :min ORDER BY n DESC LIMIT 2 OFFSET 1",
    "SELECT cars.*, _id.vin AS vin FROM cars WHERE _id = :id OR _id.year > 2020",
    "SELECT COUNT(*) AS cnt, COUNT(n) AS cntn, COUNT(DISTINCT n), SUM(n), AVG(n), MIN(n), MAX(n) FROM cars",
    "SELECT color, COUNT(*) AS cnt FROM cars GROUP BY color HAVING COUNT(*) > 1 ORDER BY color ASC",
    "SELECT * FROM system:collections",
    "SELECT * FROM COLLECTION products (stock COUNTER, props MAP(a MAP(b REGISTER)), p PN_COUNTER, f ATTACHMENT) AS p",
    "SELECT * FROM cars USE DIRECTIVES '{\"#max_scans\": 2}' WHERE n = 3",
    "SELECT * FROM cars USE INDEX (ix_color) WHERE n = 3",
    "/*+ {\"#prefer_order\": true} */ SELECT * FROM cars -- trailing comment",
    "SELECT `a b`.`select`, a['k'], arr[0], {'x': 1, 'y': [1, 2.5, 'z', null, true]} AS o FROM `odd name`",
    "SELECT * FROM t WHERE a BETWEEN 1 AND 5 AND b NOT BETWEEN 2 AND 3",
    "SELECT * FROM t WHERE a IN (1, 2) OR a NOT IN [3] OR a IN :arr OR 'x' IN object_keys(o)",
    "SELECT * FROM t WHERE a LIKE 'A%' AND b NOT LIKE '_x' AND c ILIKE 'abc' AND d NOT ILIKE 'q'",
    "SELECT * FROM t WHERE a IS NULL AND b IS NOT NULL AND c IS MISSING AND d IS NOT MISSING AND e IS UNKNOWN AND f IS NOT UNKNOWN",
    "SELECT * FROM t WHERE NOT a = 1 AND b == 2 AND c != 3 AND d <> 4 AND e < 5 AND f <= 6 AND g > 7 AND h >= 8",
    "SELECT a || 'x' AS s, -a AS n, - 1 AS m, -9223372036854775808 AS mn, 18446744073709551615 AS big, 1e3 AS e, 7 % 3 AS r FROM t",
    "SELECT * FROM t WHERE \"red\" = color AND x = MISSING",
    "SELECT 'it\\'s', 'a\\\\b', 'tab\\there\\n', 'A\\u00e9\\%', \"q\\\"uote\", 'old''style' FROM t",
    "SELECT * FROM t WHERE a LIKE 'x!%' ESCAPE '!' AND b NOT ILIKE 'Y#_' ESCAPE '#' AND c LIKE '\\\\%' ESCAPE '\\\\'",
    "SELECT coalesce(a, b, 1), nvl(a, 2), decode(a, 1, 'one', 'other'), type(a), deserialize_json(:s) FROM t",
    "INSERT INTO cars DOCUMENTS (:doc)",
    "INSERT INTO cars VALUES ({'_id': 'a', 'n': 1 + 1}), (deserialize_json(:s)) ON ID CONFLICT DO UPDATE",
    "INSERT INTO cars DOCUMENTS (:d) ON ID CONFLICT DO NOTHING",
    "INSERT INTO cars DOCUMENTS (:d) ON ID CONFLICT FAIL",
    "INSERT INTO cars DOCUMENTS (:d) ON ID CONFLICT DO UPDATE_LOCAL_DIFF",
    "INSERT INTO COLLECTION cars (props MAP) DOCUMENTS (:d)",
    "INSERT INTO cars INITIAL DOCUMENTS ({'_id': 'a'})",
    "UPDATE cars SET color = 'green', price = price + 1, extra = :e WHERE price < 15",
    "UPDATE cars SET engine.hp = 300, engine.specs.turbo = true UNSET engine.specs.cyl WHERE _id = 'a'",
    "UPDATE products APPLY stock PN_INCREMENT BY -0.5 WHERE _id = 'p1'",
    "UPDATE COLLECTION products (stock COUNTER) APPLY stock INCREMENT BY 2, other RESTART WITH 10, third RESTART WHERE _id = 'p1'",
    "UPDATE t SET m = 1 ORDER BY n DESC LIMIT 2 OFFSET 1",
    "DELETE FROM cars WHERE _id = :id",
    "DELETE FROM cars",
    "TOMBSTONE FROM cars WHERE color == 'blue'",
    "EVICT FROM cars WHERE color = 'red' ORDER BY n LIMIT 3",
    "ALTER SYSTEM SET DQL_STRICT_MODE = false",
    "ALTER SYSTEM SET tombstone_ttl_hours TO 24",
    "ALTER SYSTEM RESET DQL_STRICT_MODE",
    "ALTER SYSTEM RESET ALL",
    "SHOW DQL_STRICT_MODE",
    "SHOW ALL;",
    "EXPLAIN SELECT * FROM t WHERE a = 1",
];

#[test]
fn statements_round_trip() {
    for text in STATEMENTS {
        let first = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let printed = first.to_string();
        let second = parse(&printed).unwrap_or_else(|e| panic!("reparse of {printed}: {e}"));
        assert_eq!(second.to_string(), printed, "round trip of {text}");
    }
}

#[test]
fn precedence_is_kept_through_printing() {
    let cases = [
        (
            "SELECT * FROM t WHERE a = 1 OR b = 2 AND c = 3",
            "((a = 1) OR ((b = 2) AND (c = 3)))",
        ),
        (
            "SELECT * FROM t WHERE NOT a = 1 AND b",
            "((NOT (a = 1)) AND b)",
        ),
        (
            "SELECT * FROM t WHERE a + b * c - d = e || f",
            "(((a + (b * c)) - d) = (e || f))",
        ),
        (
            "SELECT * FROM t WHERE a LIKE 'x' IS NULL",
            "((a LIKE 'x') IS NULL)",
        ),
        (
            "SELECT * FROM t WHERE x.y[0].z IN [1] AND -a < 2",
            "((x.y[0].z IN [1]) AND ((- a) < 2))",
        ),
    ];
    for (text, filter) in cases {
        let stmt = parse(text).expect("parses");
        let printed = stmt.to_string();
        assert!(
            printed.ends_with(&format!("WHERE {filter}")),
            "{text} printed as {printed}"
        );
    }
}
