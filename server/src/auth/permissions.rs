//! Permissions, with Ditto's shape (`{read, write, remoteQuery}`, each side
//! `{everything, queriesByCollection}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One side (read or write) of a permission set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permission {
    /// Everything in every collection.
    #[serde(default)]
    pub everything: bool,
    /// Per collection, predicates over documents: a document is covered when it matches any.
    /// The predicate `"true"` covers the whole collection.
    #[serde(default)]
    pub queries_by_collection: BTreeMap<String, Vec<String>>,
}

impl Permission {
    /// Unrestricted.
    pub fn everything() -> Permission {
        Permission {
            everything: true,
            queries_by_collection: BTreeMap::new(),
        }
    }

    /// What this permission allows on `collection`.
    pub fn scope(&self, collection: &str) -> Scope<'_> {
        if self.everything {
            return Scope::All;
        }
        match self.queries_by_collection.get(collection) {
            None => Scope::Nothing,
            Some(qs) if qs.is_empty() => Scope::Nothing,
            Some(qs) if qs.iter().any(|q| q.trim() == "true") => Scope::All,
            Some(qs) => Scope::Matching(qs),
        }
    }
}

/// What a permission allows on one collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    Nothing,
    /// Documents matching any of these predicates.
    Matching(&'a [String]),
}

/// A full permission set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub read: Permission,
    #[serde(default)]
    pub write: Permission,
    /// May run queries on connected small peers.
    #[serde(default)]
    pub remote_query: bool,
    /// Query language of the predicates: 0 = legacy query language, 1 = DQL (Ditto's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ql_version: Option<u8>,
}

impl Permissions {
    /// Read and write everything (playground mode, admin).
    pub fn all() -> Permissions {
        Permissions {
            read: Permission::everything(),
            write: Permission::everything(),
            remote_query: true,
            ql_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ditto_shape_parses_and_scopes() {
        let p: Permissions = serde_json::from_str(
            r#"{"read":{"everything":false,"queriesByCollection":{"books":["_id.locationId == 'a'"]}},
                "write":{"everything":false,"queriesByCollection":{"books":["_id.locationId == 'a'"],"newspapers":["true"]}},
                "remoteQuery":false}"#,
        )
        .expect("valid permissions");
        assert_eq!(
            p.read.scope("books"),
            Scope::Matching(&["_id.locationId == 'a'".to_owned()])
        );
        assert_eq!(p.read.scope("newspapers"), Scope::Nothing);
        assert_eq!(p.write.scope("newspapers"), Scope::All);
        assert_eq!(Permissions::all().read.scope("anything"), Scope::All);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<Permissions>(r#"{"read":{"everythin":true}}"#)
            .expect_err("typo");
        assert!(err.to_string().contains("everythin"), "{err}");
    }
}
