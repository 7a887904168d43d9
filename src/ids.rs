//! Identifiers and names that every layer shares: row ids, and the vocabulary (switch names) that
//! the configuration, the capabilities and the API all speak.

/// A new id with a readable prefix (`usr_...`); UUIDv7 sorts by creation time.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A kill switch: the one kind of action it stops (ARCHITECTURE section 8).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SwitchName {
    Signups,
    Logins,
    CardLinking,
    Topups,
    Payments,
    Refunds,
}

impl SwitchName {
    pub const ALL: [SwitchName; 6] = [
        SwitchName::Signups,
        SwitchName::Logins,
        SwitchName::CardLinking,
        SwitchName::Topups,
        SwitchName::Payments,
        SwitchName::Refunds,
    ];
    /// What a freeze stops: every action that moves money.
    pub const MONEY: [SwitchName; 4] =
        [SwitchName::CardLinking, SwitchName::Topups, SwitchName::Payments, SwitchName::Refunds];

    pub fn parse(text: &str) -> Option<SwitchName> {
        SwitchName::ALL.into_iter().find(|n| n.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SwitchName::Signups => "signups",
            SwitchName::Logins => "logins",
            SwitchName::CardLinking => "card_linking",
            SwitchName::Topups => "topups",
            SwitchName::Payments => "payments",
            SwitchName::Refunds => "refunds",
        }
    }

    /// The names, for a message that lists them.
    pub fn names() -> String {
        SwitchName::ALL.map(SwitchName::as_str).join(", ")
    }
}

/// The schema of a string from a fixed set, for a field whose Rust type is a plain string
/// (`#[schema(schema_with = ..)]` takes a function of no arguments: wrap this in one).
pub fn one_of_schema(values: &[&str], description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

/// The same schema, for an optional field that also takes `null`.
pub fn or_null(mut schema: utoipa::openapi::Object) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    if let SchemaType::Type(t) = schema.schema_type {
        schema.schema_type = SchemaType::from_iter([t, Type::Null]);
    }
    if let Some(values) = &mut schema.enum_values {
        values.push(serde_json::Value::Null);
    }
    schema
}

impl std::fmt::Display for SwitchName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_names_round_trip() {
        for name in SwitchName::ALL {
            assert_eq!(SwitchName::parse(name.as_str()), Some(name));
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
        }
        assert_eq!(SwitchName::parse("everything"), None);
    }
}
