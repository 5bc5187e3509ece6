//! The scalar functions DQL knows (ditto-reference §1.11), by name and arity.

/// A scalar function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Concat,
    Contains,
    StartsWith,
    EndsWith,
    ByteLength,
    CharLength,
    Upper,
    Lower,
    IsBoolean,
    IsNumber,
    IsString,
    Type,
    ArrayContains,
    ArrayContainsNull,
    ArrayLength,
    ObjectLength,
    ObjectKeys,
    ObjectValues,
    Coalesce,
    Nvl,
    Decode,
    Abs,
    Ceil,
    Floor,
    DeserializeJson,
}

impl Func {
    /// Looks a function up by its lower-case name.
    pub fn lookup(name: &str) -> Option<Func> {
        Some(match name {
            "concat" => Func::Concat,
            "contains" => Func::Contains,
            "starts_with" => Func::StartsWith,
            "ends_with" => Func::EndsWith,
            "byte_length" => Func::ByteLength,
            "char_length" | "character_length" => Func::CharLength,
            "upper" => Func::Upper,
            "lower" => Func::Lower,
            "is_boolean" => Func::IsBoolean,
            "is_number" => Func::IsNumber,
            "is_string" => Func::IsString,
            "type" => Func::Type,
            "array_contains" => Func::ArrayContains,
            "array_contains_null" => Func::ArrayContainsNull,
            "array_length" => Func::ArrayLength,
            "object_length" => Func::ObjectLength,
            "object_keys" => Func::ObjectKeys,
            "object_values" => Func::ObjectValues,
            "coalesce" => Func::Coalesce,
            "nvl" => Func::Nvl,
            "decode" => Func::Decode,
            "abs" => Func::Abs,
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "deserialize_json" => Func::DeserializeJson,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Func::Concat => "concat",
            Func::Contains => "contains",
            Func::StartsWith => "starts_with",
            Func::EndsWith => "ends_with",
            Func::ByteLength => "byte_length",
            Func::CharLength => "char_length",
            Func::Upper => "upper",
            Func::Lower => "lower",
            Func::IsBoolean => "is_boolean",
            Func::IsNumber => "is_number",
            Func::IsString => "is_string",
            Func::Type => "type",
            Func::ArrayContains => "array_contains",
            Func::ArrayContainsNull => "array_contains_null",
            Func::ArrayLength => "array_length",
            Func::ObjectLength => "object_length",
            Func::ObjectKeys => "object_keys",
            Func::ObjectValues => "object_values",
            Func::Coalesce => "coalesce",
            Func::Nvl => "nvl",
            Func::Decode => "decode",
            Func::Abs => "abs",
            Func::Ceil => "ceil",
            Func::Floor => "floor",
            Func::DeserializeJson => "deserialize_json",
        }
    }

    /// Whether `n` arguments are accepted.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Func::Concat => n >= 2,
            Func::Coalesce => n >= 1,
            Func::Decode => n >= 3,
            Func::Contains
            | Func::StartsWith
            | Func::EndsWith
            | Func::ArrayContains
            | Func::Nvl => n == 2,
            Func::ByteLength
            | Func::CharLength
            | Func::Upper
            | Func::Lower
            | Func::IsBoolean
            | Func::IsNumber
            | Func::IsString
            | Func::Type
            | Func::ArrayContainsNull
            | Func::ArrayLength
            | Func::ObjectLength
            | Func::ObjectKeys
            | Func::ObjectValues
            | Func::Abs
            | Func::Ceil
            | Func::Floor
            | Func::DeserializeJson => n == 1,
        }
    }
}
