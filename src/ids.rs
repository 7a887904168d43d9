//! Identifiers and names that every layer shares: row ids, and the vocabulary (switch names) that
//! the configuration, the capabilities and the API all speak.

/// A new id with a readable prefix (`usr_...`); UUIDv7 sorts by creation time.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// What every id type offers generic code (a path extractor, say).
pub trait Id: Sized {
    /// What the id names, for a message ("there is no such store").
    const NOUN: &'static str;
    fn from_raw(text: String) -> Self;
}

/// Declares a row id type: a string with a readable prefix, which the type system keeps apart
/// from every other kind of id (a `PaymentId` cannot be passed where a `TopupId` is wanted).
/// It binds to and reads from SQL as text, serialises as a plain string, and shows as one in the
/// OpenAPI document.
macro_rules! id_types {
    ($($(#[$doc:meta])* $name:ident = $prefix:literal, $noun:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix of every id of this kind that Omamori makes.
            pub const PREFIX: &'static str = $prefix;

            /// A new id of this kind.
            pub fn generate() -> Self {
                Self(new_id($prefix))
            }

            /// An id as a client or a row gave it. It is not checked: a lookup finds it or not.
            pub fn from_raw(text: impl Into<String>) -> Self {
                Self(text.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Id for $name {
            const NOUN: &'static str = $noun;
            fn from_raw(text: String) -> Self {
                Self(text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// For the command line: any text, as [`Self::from_raw`] takes it.
        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Ok(Self(text.to_string()))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl From<$name> for serde_json::Value {
            fn from(id: $name) -> serde_json::Value {
                serde_json::Value::String(id.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                <String as sqlx::Decode<'r, DB>>::decode(value).map(Self)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .description(Some(concat!("An id (`", $prefix, "_...`).")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

id_types! {
    /// A shopper.
    UserId = "usr", "user";
    /// A device token: a phone or browser that completed a two-step login (the device itself is
    /// named by the id the app chose, which is not ours).
    DeviceTokenId = "dev", "device token";
    /// A shopper's login session.
    SessionId = "ses", "session";
    /// A second step waiting for its proof (login, step-up, card).
    ChallengeId = "chl", "challenge";
    /// A password reset in progress.
    ResetId = "rst", "reset";
    /// A sign-up waiting for its codes.
    SignupId = "sgn", "sign-up";
    /// An operator.
    OperatorId = "opr", "operator";
    /// A registered passkey (a WebAuthn credential's public key).
    PasskeyId = "pky", "passkey";
    /// A passkey registration ceremony in progress.
    RegistrationId = "pkr", "passkey registration";
    /// A linked card.
    CardId = "crd", "card";
    /// A top-up.
    TopupId = "top", "top-up";
    /// A payment at a store.
    PaymentId = "pay", "payment";
    /// A refund of a payment.
    RefundId = "rfd", "refund";
    /// A proposed or applied ledger correction.
    CorrectionId = "cor", "correction";
    /// A merchant (the business).
    MerchantId = "mer", "merchant";
    /// A person of a merchant who logs in to the dashboard: an owner or a staff member.
    MerchantUserId = "mus", "merchant user";
    /// A store of a merchant.
    StoreId = "sto", "store";
    /// A POS terminal of a store.
    TerminalId = "trm", "terminal";
    /// A merchant's webhook endpoint.
    WebhookId = "whk", "webhook endpoint";
    /// A webhook event (one delivery's subject, the same across retries).
    EventId = "evt", "event";
    /// A review case (a held top-up or payment).
    ReviewId = "rev", "review";
    /// A fraud alert.
    AlertId = "alr", "alert";
    /// An engaged kill switch.
    SwitchId = "swt", "switch";
    /// A merchant's settlement of one day.
    SettlementId = "stl", "settlement";
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
