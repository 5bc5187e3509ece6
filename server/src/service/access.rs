//! Permissions applied to statements.
//!
//! A permission side (read or write) gives, per collection, either everything, nothing, or the
//! documents matching any of a list of predicates (Ditto's `queriesByCollection`). Predicates are
//! in the legacy query language unless the permission set says `qlVersion: 1` (DQL); both are
//! checked into the same resolved expressions the DQL engine runs, so a read filter runs inside
//! the compiled Postgres query and a write check runs in memory on the locked document.

use std::collections::BTreeMap;

use bigpeer_dql::plan::{self, PExpr};

use super::ServiceError;
use crate::auth::{AuthError, Permission, Permissions, Scope};

/// What one side of a permission set allows on one collection, resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowed {
    All,
    Nothing,
    /// Documents for which this expression is true.
    Matching(PExpr),
}

/// The permissions of one request.
#[derive(Debug, Clone)]
pub struct Access {
    perms: Permissions,
}

impl Access {
    pub fn new(perms: Permissions) -> Access {
        Access { perms }
    }

    /// Everything allowed (playground, admin).
    pub fn all() -> Access {
        Access {
            perms: Permissions::all(),
        }
    }

    pub fn permissions(&self) -> &Permissions {
        &self.perms
    }

    pub fn read(&self, collection: &str) -> Result<Allowed, ServiceError> {
        resolve(&self.perms.read, collection, self.perms.ql_version)
    }

    pub fn write(&self, collection: &str) -> Result<Allowed, ServiceError> {
        resolve(&self.perms.write, collection, self.perms.ql_version)
    }

    /// True when the collection is readable at all (for `system:collections`).
    pub fn can_read_some(&self, collection: &str) -> bool {
        !matches!(self.perms.read.scope(collection), Scope::Nothing)
    }
}

fn resolve(
    side: &Permission,
    collection: &str,
    ql_version: Option<u8>,
) -> Result<Allowed, ServiceError> {
    match side.scope(collection) {
        Scope::All => Ok(Allowed::All),
        Scope::Nothing => Ok(Allowed::Nothing),
        Scope::Matching(queries) => {
            let mut parts = Vec::with_capacity(queries.len());
            for q in queries {
                parts.push(predicate(q, ql_version)?);
            }
            Ok(Allowed::Matching(if parts.len() == 1 {
                parts.remove(0)
            } else {
                PExpr::Any(parts)
            }))
        }
    }
}

/// Resolves one permission predicate: a DQL expression (`qlVersion: 1`) or a legacy query,
/// read as an expression on its own (no statement is written around it, so nothing after the
/// expression is taken as a clause of one) and checked as a condition on the whole document.
fn predicate(query: &str, ql_version: Option<u8>) -> Result<PExpr, ServiceError> {
    let bad = |e: bigpeer_dql::DqlError| {
        ServiceError::Auth(AuthError::InvalidRequest(format!(
            "permission query {query:?} is not valid: {}",
            e.message
        )))
    };
    let expr = match ql_version {
        Some(1) => bigpeer_dql::parser::parse_expression(query),
        _ => bigpeer_dql::legacy::to_expr(query),
    }
    .map_err(bad)?;
    plan::check_condition(&expr, &BTreeMap::new()).map_err(bad)
}

/// Checks every predicate a permission set holds (so a bad key is refused when it is made).
pub fn validate(perms: &Permissions) -> Result<(), ServiceError> {
    for side in [&perms.read, &perms.write] {
        for queries in side.queries_by_collection.values() {
            for q in queries {
                predicate(q, perms.ql_version)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(json: &str) -> Permissions {
        serde_json::from_str(json).expect("permissions")
    }

    #[test]
    fn scopes_resolve() {
        let p = perms(
            r#"{"read":{"queriesByCollection":{"books":["_id.loc == 'a'", "_id.loc == 'b'"],"all":["true"]}},
                "write":{"everything":true}}"#,
        );
        let a = Access::new(p);
        assert!(
            matches!(a.read("books").expect("resolves"), Allowed::Matching(PExpr::Any(v)) if v.len() == 2)
        );
        assert_eq!(a.read("all").expect("resolves"), Allowed::All);
        assert_eq!(a.read("other").expect("resolves"), Allowed::Nothing);
        assert_eq!(a.write("other").expect("resolves"), Allowed::All);
        assert!(a.can_read_some("books") && !a.can_read_some("other"));
    }

    #[test]
    fn dql_predicates_with_ql_version_1() {
        let a = Access::new(perms(
            r#"{"read":{"queriesByCollection":{"c":["_id.loc IN ['a', 'b']"]}},"qlVersion":1}"#,
        ));
        assert!(matches!(
            a.read("c").expect("resolves"),
            Allowed::Matching(_)
        ));
    }

    #[test]
    fn bad_predicates_are_refused() {
        let p = perms(r#"{"read":{"queriesByCollection":{"c":["_id ==="]}}}"#);
        let err = validate(&p).expect_err("invalid");
        assert_eq!(err.code(), "auth/invalid-request");
        assert!(validate(&perms(
            r#"{"write":{"queriesByCollection":{"c":["_id.loc == $args.x"]}}}"#
        ))
        .is_err());
    }

    #[test]
    fn a_predicate_is_an_expression_not_the_tail_of_a_statement() {
        // Once read as `SELECT * FROM permission_check WHERE <predicate>`: clauses after the
        // expression were taken and dropped (`LIMIT 0` limited nothing).
        for tail in [
            "owner = 'alice' LIMIT 0",
            "true ORDER BY secret",
            "owner = 'alice' GROUP BY owner",
            "true OFFSET 5",
        ] {
            let p = perms(&format!(
                r#"{{"read":{{"queriesByCollection":{{"c":["{tail}"]}}}},"qlVersion":1}}"#
            ));
            let err = validate(&p).expect_err(tail);
            assert_eq!(err.code(), "auth/invalid-request", "{tail}");
        }
    }

    #[test]
    fn no_name_in_a_predicate_is_taken_for_a_collection() {
        // Once `permission_check.team` was the field `team` (the made-up collection's name
        // qualified it) and `permission_check` the whole document.
        let team = PExpr::Cmp(
            plan::CmpOp::Eq,
            PExpr::Field(vec!["permission_check".into(), "team".into()]).boxed(),
            PExpr::Lit(bigpeer_schema::Value::String("a".into())).boxed(),
        );
        for json in [
            r#"{"read":{"queriesByCollection":{"c":["permission_check.team = 'a'"]}},"qlVersion":1}"#,
            r#"{"read":{"queriesByCollection":{"c":["permission_check.team == 'a'"]}}}"#,
        ] {
            let a = Access::new(perms(json));
            assert_eq!(
                a.read("c").expect("resolves"),
                Allowed::Matching(team.clone())
            );
        }
    }
}
