//! Prints the plan and the compiled Postgres statement of a DQL statement:
//! `cargo run -p bigpeer-dql --example compile -- "SELECT * FROM cars WHERE color = 'red'" '{"x": 1}'`

use std::collections::BTreeMap;

use bigpeer_schema::Value;

fn main() {
    let mut argv = std::env::args().skip(1);
    let Some(text) = argv.next() else {
        eprintln!("usage: compile <statement> [args-json]");
        std::process::exit(2);
    };
    let args: BTreeMap<String, Value> = match argv.next().map(|a| Value::parse_json(&a)) {
        Some(Ok(Value::Object(o))) => o,
        Some(_) => {
            eprintln!("args must be a JSON object");
            std::process::exit(2);
        }
        None => BTreeMap::new(),
    };
    match bigpeer_dql::sql::compile_statement(&text, &args) {
        Ok((plan, compiled)) => {
            println!("{}", bigpeer_dql::plan::explain(&plan));
            match compiled {
                bigpeer_dql::sql::CompiledPlan::Query(c)
                | bigpeer_dql::sql::CompiledPlan::Mutation { targets: c } => {
                    println!("{}", c.sql);
                    for (i, p) in c.params.iter().enumerate() {
                        println!("  ${} = {p:?}", i + 1);
                    }
                }
                bigpeer_dql::sql::CompiledPlan::NoSql => println!("(no SQL)"),
            }
        }
        Err(e) => {
            eprintln!(
                "{}: {} (line {}, column {})",
                e.code, e.message, e.line, e.column
            );
            std::process::exit(1);
        }
    }
}
