//! Parser fuzzing on stable Rust, as property-based tests (proptest): every decoder of
//! hostile input is fed arbitrary and structured-but-wrong input, and checked against an
//! oracle (a round trip, or a reference model written here from the documented rules).
//!
//! Case counts: [`DEFAULT_CASES`] per pure property in a normal `cargo test`; set
//! `FUZZ_CASES=1000000` for a long run (read once, used for every pure property). The HTTP
//! property (`http_api_bodies_never_fail_the_server`; `-- --skip http` leaves it out)
//! drives a real server, [`DEFAULT_HTTP_CASES`] per endpoint, or `FUZZ_HTTP_CASES`.
//! No failure-persistence files are written: a failure prints its minimal input, which is
//! then kept as a regular `#[test]` next to the code it broke (so far: `ids::tests::
//! server_to_user_ids_follow_the_user_id_rule` and `protocol::bus::tests::
//! bad_status_is_not_an_unknown_type`).

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::strategy::LazyJust;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use sha2::{Sha256, Sha384, Sha512};

use switchboard::apps::{App, Secret};
use switchboard::auth::{self, BusClaims};
use switchboard::config::AppConfig;
use switchboard::event::Status;
use switchboard::filter::{self, Filter, Tags};
use switchboard::ids::{self, ChannelName, NameError, SocketId, UserId};
use switchboard::protocol::{bus, pusher};

/// Cases per pure property in a normal test run.
const DEFAULT_CASES: u32 = 256;
/// Cases per HTTP endpoint in a normal test run.
const DEFAULT_HTTP_CASES: u32 = 100;

fn env_cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var} must be a number of cases, not {v:?}"))
        })
        .unwrap_or(default)
}

/// `FUZZ_CASES`, read once.
fn cases() -> u32 {
    static CASES: OnceLock<u32> = OnceLock::new();
    *CASES.get_or_init(|| env_cases("FUZZ_CASES", DEFAULT_CASES))
}

fn config_with(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Nothing is written next to the sources: a failure is reported with its minimal
        // input, and a real one becomes a plain `#[test]`.
        failure_persistence: None,
        // The properties reject (almost) nothing; the limits must not end a long run.
        max_local_rejects: cases.max(65_536),
        max_global_rejects: cases.max(1_024),
        ..ProptestConfig::default()
    }
}

fn config() -> ProptestConfig {
    config_with(cases())
}

// ---------------------------------------------------------------------------------------
// Hostile input: strings, JSON values and JSON text.

/// Strings that break parsers: arbitrary unicode, control characters, NUL, BOM, lone
/// prefixes of the protocol's names, boundary lengths.
fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z0-9:_-]{0,12}",
        1 => "\\PC{0,24}",
        1 => prop::sample::select(vec![
            "", "\0", "nul\0byte", "\u{feff}", "\u{7f}", "\u{85}", "\u{2028}", "\u{10ffff}",
            "😀", "é", "\t\r\n", "\"", "\\", "/", "../..", "private-", "presence-x",
            "private-encrypted-x", "#server-to-user-", "#server-to-user-u1", "client-",
            "client-x", "pusher:", "pusher:subscribe", "pusher_internal:x", "null", "true",
            "{}", "[]", "{\"channel\":\"a\"}", "1e400",
        ])
        .prop_map(str::to_owned),
        1 => (1usize..300).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

/// JSON scalars, including numbers at and past the edges of the integer types.
fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, -1, 1, i64::MIN, i64::MAX, 4_294_967_296])
            .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ]
    .boxed()
}

/// Arbitrary JSON values, nested up to 6 levels.
fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(hostile_string(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// JSON values without floats, for exact round trips (serde_json parses some floats one
/// ULP off without its `float_roundtrip` feature).
fn exact_json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(hostile_string(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// JSON text, valid or not: huge and malformed numbers, NUL (escaped and raw), lone
/// surrogates, nesting past serde_json's recursion limit, truncated literals.
fn json_text() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        4 => json_leaf().prop_map(|v| v.to_string()),
        1 => "-?[0-9]{1,40}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,5})?",
        1 => prop::sample::select(vec![
            "", "nul", "tru", "-", "01", "1.", ".5", "1e", "+1", "NaN", "Infinity", "\"\\u0000\"",
            "\"\\ud800\"", "\"\\udc00\\ud800\"", "\"\0\"", "\"\u{1}\"", "\"\\x\"", "\"unterminated",
            "[", "{", "{\"a\"", "{\"a\":}", "[1,]", "{,}", "\u{feff}{}", "18446744073709551616",
            "-9223372036854775809", "1e400", "-1e400", "1e-400",
        ])
        .prop_map(str::to_owned),
        1 => (100usize..400).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        1 => (100usize..400).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
        1 => "[^\"]{0,6}",
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            vec((hostile_string(), inner), 0..6).prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", Value::String(k)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
    .boxed()
}

/// One edit of a text: at a position (taken modulo the length).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, char),
    Replace(usize, char),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![
        3 => prop::sample::select(vec![
            '"', '\\', '{', '}', '[', ']', ':', ',', '0', '9', '-', 'e', '.', 'a', ' ', '\0',
            '\u{7f}', 'é', '😀',
        ]),
        1 => any::<char>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

/// Applies edits to `s`, character by character.
fn mutate(s: &str, edits: &[Edit]) -> String {
    let mut cs: Vec<char> = s.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        let len = cs.len();
        match *e {
            Edit::Delete(i) if len > 0 => {
                cs.remove(at(i, len));
            }
            Edit::Insert(i, c) => cs.insert(at(i, len + 1), c),
            Edit::Replace(i, c) if len > 0 => cs[at(i, len)] = c,
            Edit::Truncate(i) => cs.truncate(at(i, len + 1)),
            Edit::Duplicate(i, n) if len > 0 => {
                let from = at(i, len);
                let to = (from + n).min(len);
                let copy: Vec<char> = cs[from..to].to_vec();
                cs.splice(to..to, copy);
            }
            _ => {}
        }
    }
    cs.into_iter().collect()
}

/// Whether `s` is JSON by the grammar (serde_json's `Value` also refuses numbers past
/// `f64` and lone surrogates, which the grammar allows and the decoders may pass through).
fn is_json(s: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// The JSON text of an object with these fields, in this order.
fn object_text(fields: &[(String, String)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

// ---------------------------------------------------------------------------------------
// Pusher client messages.

const PUSHER_EVENTS: &[&str] = &[
    "pusher:ping",
    "pusher:pong",
    "pusher:subscribe",
    "pusher:unsubscribe",
    "pusher:signin",
    "pusher:enable_delta_compression",
    "pusher:delta_sync_error",
    "client-x",
    "client-",
    "pusher:other",
    "pusher_internal:subscription_succeeded",
];

/// What the reference model expects of `pusher::decode`.
#[derive(Debug, PartialEq)]
enum PusherExpect {
    Ok(pusher::Command),
    Malformed,
    BadField,
    Unknown,
    /// Arrays where an object is expected: serde also reads a struct from a sequence of its
    /// fields, which the model leaves alone.
    Unmodeled,
}

fn model_opt_str(v: Option<&Value>) -> Result<Option<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

fn model_str(v: Option<&Value>) -> Result<String, ()> {
    model_opt_str(v)?.ok_or(())
}

/// The reference model of `pusher::decode` on a JSON value, from the protocol's rules:
/// `event` a string; `channel` absent, null or a string; `data` (an object, or a string
/// holding the JSON of one) with the fields of each event.
fn pusher_model(v: &Value) -> PusherExpect {
    use pusher::Command as C;
    use PusherExpect as E;
    let Some(obj) = v.as_object() else {
        return if v.is_array() {
            E::Unmodeled
        } else {
            E::Malformed
        };
    };
    let Some(event) = obj.get("event").and_then(Value::as_str) else {
        return E::Malformed;
    };
    let Ok(channel) = model_opt_str(obj.get("channel")) else {
        return E::Malformed;
    };
    let data = obj.get("data").filter(|d| !d.is_null());
    // The data object, double-encoded or not.
    let data_obj = || -> Result<Map<String, Value>, PusherExpect> {
        match data {
            None => Err(E::BadField),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(Value::Array(_)) => Err(E::Unmodeled),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(Value::Array(_)) => Err(E::Unmodeled),
                _ => Err(E::BadField),
            },
            Some(_) => Err(E::BadField),
        }
    };
    let fields = |f: DataFields<'_>| match data_obj() {
        Ok(m) => f(&m).map_or(E::BadField, E::Ok),
        Err(e) => e,
    };
    match event {
        "pusher:ping" => E::Ok(C::Ping),
        "pusher:pong" => E::Ok(C::Pong),
        "pusher:enable_delta_compression" => E::Ok(C::EnableDelta),
        "pusher:subscribe" => fields(&|m| {
            Ok(C::Subscribe {
                channel: model_str(m.get("channel"))?,
                auth: model_opt_str(m.get("auth"))?,
                channel_data: model_opt_str(m.get("channel_data"))?,
                filter: m.get("filter").filter(|f| !f.is_null()).cloned(),
            })
        }),
        "pusher:unsubscribe" => fields(&|m| {
            Ok(C::Unsubscribe {
                channel: model_str(m.get("channel"))?,
            })
        }),
        "pusher:delta_sync_error" => fields(&|m| {
            Ok(C::DeltaSyncError {
                channel: model_str(m.get("channel"))?,
            })
        }),
        "pusher:signin" => fields(&|m| {
            Ok(C::Signin {
                auth: model_str(m.get("auth"))?,
                user_data: model_str(m.get("user_data"))?,
            })
        }),
        e if e.starts_with("client-") => match channel {
            None => E::BadField,
            Some(channel) => E::Ok(C::ClientEvent {
                event: e.to_owned(),
                channel,
                data: data.map_or_else(|| "null".to_owned(), Value::to_string),
            }),
        },
        _ => E::Unknown,
    }
}

/// Builds a command from a `data` object, or says the fields are wrong.
type DataFields<'a> = &'a dyn Fn(&Map<String, Value>) -> Result<pusher::Command, ()>;

fn pusher_outcome(r: Result<pusher::Command, pusher::DecodeError>) -> PusherExpect {
    match r {
        Ok(c) => PusherExpect::Ok(c),
        Err(pusher::DecodeError::Malformed(_)) => PusherExpect::Malformed,
        Err(pusher::DecodeError::BadField { .. }) => PusherExpect::BadField,
        Err(pusher::DecodeError::UnknownEvent(_)) => PusherExpect::Unknown,
    }
}

/// Pusher messages built from parts that are sometimes right and often wrong.
fn pusher_message_value() -> impl Strategy<Value = Value> {
    let event = prop_oneof![
        8 => prop::sample::select(PUSHER_EVENTS).prop_map(|e| Value::String(e.into())),
        1 => "client-\\PC{0,8}".prop_map(Value::String),
        1 => json_value(),
    ];
    // A data object with the fields decoders look for, each right (mostly), wrong or
    // absent.
    let field = |name: &'static str| {
        prop::option::weighted(
            0.75,
            prop_oneof![
                4 => hostile_string().prop_map(Value::String),
                1 => json_value(),
            ],
        )
        .prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    let data_obj = (
        field("channel"),
        field("auth"),
        field("channel_data"),
        field("user_data"),
        prop::option::of(json_value()).prop_map(|v| v.map(|v| ("filter".to_owned(), v))),
        prop::option::of((hostile_string(), json_value())),
    )
        .prop_map(|(a, b, c, d, e, f)| {
            Value::Object([a, b, c, d, e, f].into_iter().flatten().collect())
        });
    let data = prop_oneof![
        3 => data_obj.clone(),
        2 => data_obj.prop_map(|o| Value::String(o.to_string())),
        1 => json_value(),
        1 => json_value().prop_map(|v| Value::String(v.to_string())),
    ];
    let channel = prop_oneof![
        3 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.95, event),
        prop::option::weighted(0.9, data),
        prop::option::of(channel),
        prop::option::of((hostile_string(), json_value())),
    )
        .prop_map(|(event, data, channel, extra)| {
            let mut m = Map::new();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            for (k, v) in [("event", event), ("data", data), ("channel", channel)] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        })
}

/// Valid Pusher commands.
fn pusher_command() -> impl Strategy<Value = pusher::Command> {
    use pusher::Command as C;
    let s = hostile_string;
    let filter =
        prop::option::of(exact_json_value().prop_map(|v| if v.is_null() { json!({}) } else { v }));
    prop_oneof![
        LazyJust::new(|| C::Ping),
        LazyJust::new(|| C::Pong),
        LazyJust::new(|| C::EnableDelta),
        (s(), prop::option::of(s()), prop::option::of(s()), filter).prop_map(
            |(channel, auth, channel_data, filter)| C::Subscribe {
                channel,
                auth,
                channel_data,
                filter,
            }
        ),
        s().prop_map(|channel| C::Unsubscribe { channel }),
        s().prop_map(|channel| C::DeltaSyncError { channel }),
        (s(), s()).prop_map(|(auth, user_data)| C::Signin { auth, user_data }),
        ("\\PC{0,16}", s(), exact_json_value()).prop_map(|(e, channel, data)| C::ClientEvent {
            event: format!("client-{e}"),
            channel,
            data: data.to_string(),
        }),
    ]
}

/// The JSON a client sends for `cmd`; `double` encodes `data` as a string, as some clients
/// do; `extra` adds an unknown field.
fn pusher_encode(cmd: &pusher::Command, double: bool, extra: Option<(String, Value)>) -> String {
    use pusher::Command as C;
    let (event, data): (&str, Option<Value>) = match cmd {
        C::Ping => ("pusher:ping", Some(json!({}))),
        C::Pong => ("pusher:pong", None),
        C::EnableDelta => ("pusher:enable_delta_compression", Some(json!({}))),
        C::Subscribe {
            channel,
            auth,
            channel_data,
            filter,
        } => {
            let mut d = json!({ "channel": channel });
            if let Some(a) = auth {
                d["auth"] = json!(a);
            }
            if let Some(c) = channel_data {
                d["channel_data"] = json!(c);
            }
            if let Some(f) = filter {
                d["filter"] = f.clone();
            }
            ("pusher:subscribe", Some(d))
        }
        C::Unsubscribe { channel } => ("pusher:unsubscribe", Some(json!({ "channel": channel }))),
        C::DeltaSyncError { channel } => (
            "pusher:delta_sync_error",
            Some(json!({ "channel": channel })),
        ),
        C::Signin { auth, user_data } => (
            "pusher:signin",
            Some(json!({ "auth": auth, "user_data": user_data })),
        ),
        C::ClientEvent {
            event,
            channel,
            data,
        } => {
            // The data passes through as raw JSON text.
            return object_text(&[
                ("event".into(), Value::String(event.clone()).to_string()),
                ("channel".into(), Value::String(channel.clone()).to_string()),
                ("data".into(), data.clone()),
            ]);
        }
    };
    let mut fields = vec![("event".to_owned(), Value::String(event.into()).to_string())];
    if let Some(d) = data {
        let d = if double {
            Value::String(d.to_string())
        } else {
            d
        };
        fields.push(("data".into(), d.to_string()));
    }
    if let Some((k, v)) = extra {
        if !["event", "data", "channel"].contains(&k.as_str()) {
            fields.insert(0, (k, v.to_string()));
        }
    }
    object_text(&fields)
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text never panics; an `Ok` is only ever given for valid JSON.
    #[test]
    fn pusher_decode_arbitrary_text(s in prop_oneof![
        any::<String>(),
        vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        json_text(),
        pusher_command().prop_map(|c| pusher_encode(&c, false, None)),
    ]) {
        let r = pusher::decode(&s);
        if r.is_ok() {
            prop_assert!(is_json(&s), "accepted non-JSON {s:?}");
        } else {
            prop_assert!(!r.unwrap_err().to_string().is_empty());
        }
    }

    /// Structured but wrong messages (wrong field types, missing fields, huge numbers,
    /// unicode, NUL) decode exactly as the reference model says.
    #[test]
    fn pusher_decode_agrees_with_model(v in pusher_message_value()) {
        let text = v.to_string();
        // Filters: the model reads the text once, as the decoder does, so that floats agree
        // to the bit (serde_json may be an ULP off per read without `float_roundtrip`).
        // Client-event data: raw text, i.e. the JSON of the value as generated.
        let read = pusher_model(&serde_json::from_str(&text).expect("a Value's JSON reads back"));
        let expect = match (read, pusher_model(&v)) {
            (PusherExpect::Ok(pusher::Command::ClientEvent { .. }), raw) => raw,
            (read, _) => read,
        };
        let got = pusher_outcome(pusher::decode(&text));
        if expect != PusherExpect::Unmodeled {
            prop_assert_eq!(got, expect, "for {}", text);
        }
    }

    /// Valid messages decode to the command they were built from, whatever the encoding
    /// of `data` and whatever unknown fields come along.
    #[test]
    fn pusher_decode_round_trip(
        cmd in pusher_command(),
        double in any::<bool>(),
        extra in prop::option::of((hostile_string(), json_value())),
    ) {
        let text = pusher_encode(&cmd, double, extra);
        prop_assert_eq!(pusher::decode(&text), Ok(cmd), "for {}", text);
    }

    /// Valid messages with edits (deleted, inserted, replaced characters, truncation)
    /// never panic; non-JSON is `Malformed`; what decodes is what the model makes of it
    /// (one way only: duplicate keys, which an edit can make, fail the decoder and not
    /// the model).
    #[test]
    fn pusher_decode_mutated(
        cmd in pusher_command(),
        double in any::<bool>(),
        edits in vec(edit(), 1..4),
    ) {
        let text = mutate(&pusher_encode(&cmd, double, None), &edits);
        let got = pusher::decode(&text);
        if !is_json(&text) {
            prop_assert!(matches!(got, Err(pusher::DecodeError::Malformed(_))), "{:?} for {:?}", got, text);
        }
        if let (Ok(got), Ok(v)) = (got, serde_json::from_str::<Value>(&text)) {
            let expect = pusher_model(&v);
            if expect != PusherExpect::Unmodeled {
                // Raw `data` and filters keep the text's own spelling: compare the rest.
                prop_assert_eq!(pusher_shape(expect), pusher_shape(PusherExpect::Ok(got)), "for {:?}", text);
            }
        }
    }
}

/// An outcome without the parts that keep the input's spelling of JSON.
fn pusher_shape(e: PusherExpect) -> PusherExpect {
    use pusher::Command as C;
    match e {
        PusherExpect::Ok(C::Subscribe {
            channel,
            auth,
            channel_data,
            filter,
        }) => PusherExpect::Ok(C::Subscribe {
            channel,
            auth,
            channel_data,
            filter: filter.map(|_| Value::Null),
        }),
        PusherExpect::Ok(C::ClientEvent { event, channel, .. }) => {
            PusherExpect::Ok(C::ClientEvent {
                event,
                channel,
                data: String::new(),
            })
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Bus client messages.

/// The bus commands and their fields.
const BUS_TYPES: &[(&str, &[&str])] = &[
    ("subscribe", &["events", "rooms", "since"]),
    ("unsubscribe", &["events", "rooms"]),
    ("presence", &["status", "activity"]),
    ("typing", &["recipient", "conversation_id"]),
    ("ping", &[]),
    ("ack", &["id", "ids"]),
    ("register_push", &["platform", "token", "subscription"]),
    ("unregister_push", &["id"]),
];

#[derive(Debug, PartialEq)]
enum BusExpect {
    Ok(bus::Command),
    /// A clean error that is not about the message type.
    Invalid,
    /// `"unknown message type"`.
    UnknownType,
    /// Shapes serde reads more leniently than the model (a struct from an array, an enum
    /// from a one-entry object).
    Unmodeled,
}

/// A verdict of the model other than `Ok`.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Invalid,
    UnknownType,
    Unmodeled,
}

impl From<Verdict> for BusExpect {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Invalid => BusExpect::Invalid,
            Verdict::UnknownType => BusExpect::UnknownType,
            Verdict::Unmodeled => BusExpect::Unmodeled,
        }
    }
}

/// Reads one field the way the model allows it, or gives the verdict.
type Field<T> = Result<T, Verdict>;

fn bus_str(m: &Map<String, Value>, k: &str) -> Field<String> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(Verdict::Invalid),
    }
}

fn bus_opt_str(m: &Map<String, Value>, k: &str) -> Field<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Verdict::Invalid),
    }
}

fn bus_strings(m: &Map<String, Value>, k: &str) -> Field<Vec<String>> {
    match m.get(k) {
        None => Ok(Vec::new()),
        Some(Value::Array(xs)) => xs
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or(Verdict::Invalid))
            .collect(),
        Some(_) => Err(Verdict::Invalid),
    }
}

fn bus_subscription(v: &Value) -> Field<bus::PushSubscription> {
    match v {
        Value::Object(m) => {
            let keys = match m.get("keys") {
                Some(Value::Object(k)) => bus::PushKeys {
                    p256dh: bus_str(k, "p256dh")?,
                    auth: bus_str(k, "auth")?,
                },
                Some(Value::Array(_)) => return Err(Verdict::Unmodeled),
                _ => return Err(Verdict::Invalid),
            };
            Ok(bus::PushSubscription {
                endpoint: bus_str(m, "endpoint")?,
                keys,
            })
        }
        Value::Array(_) => Err(Verdict::Unmodeled),
        _ => Err(Verdict::Invalid),
    }
}

/// The reference model of `bus::decode`: an object with a string `type` naming one of the
/// commands, and that command's fields with their documented types.
fn bus_model(v: &Value) -> BusExpect {
    use bus::Command as C;
    let m = match v {
        Value::Object(m) => m,
        Value::Array(_) => return BusExpect::Unmodeled,
        _ => return BusExpect::Invalid,
    };
    let Some(Value::String(t)) = m.get("type") else {
        return BusExpect::Invalid;
    };
    let cmd = || -> Field<C> {
        Ok(match t.as_str() {
            "subscribe" => C::Subscribe {
                events: bus_strings(m, "events")?,
                rooms: bus_strings(m, "rooms")?,
                since: match m.get("since") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(bus::Since::All(s.clone())),
                    Some(Value::Object(o)) => Some(bus::Since::PerStream(
                        o.iter()
                            .map(|(k, v)| {
                                Ok((k.clone(), v.as_str().ok_or(Verdict::Invalid)?.to_owned()))
                            })
                            .collect::<Field<_>>()?,
                    )),
                    Some(_) => return Err(Verdict::Invalid),
                },
            },
            "unsubscribe" => C::Unsubscribe {
                events: bus_strings(m, "events")?,
                rooms: bus_strings(m, "rooms")?,
            },
            "presence" => C::Presence {
                status: match m.get("status") {
                    Some(Value::String(s)) => match s.as_str() {
                        "online" => Status::Online,
                        "away" => Status::Away,
                        "busy" => Status::Busy,
                        "offline" => Status::Offline,
                        _ => return Err(Verdict::Invalid),
                    },
                    Some(Value::Object(o)) if o.len() == 1 => return Err(Verdict::Unmodeled),
                    _ => return Err(Verdict::Invalid),
                },
                activity: bus_opt_str(m, "activity")?,
            },
            "typing" => C::Typing {
                recipient: bus_str(m, "recipient")?,
                conversation_id: bus_str(m, "conversation_id")?,
            },
            "ping" => C::Ping,
            "ack" => C::Ack {
                id: bus_opt_str(m, "id")?,
                ids: bus_strings(m, "ids")?,
            },
            "register_push" => C::RegisterPush {
                platform: bus_str(m, "platform")?,
                token: match m.get("token") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(bus::PushToken::Text(s.clone())),
                    Some(v) => Some(bus::PushToken::Subscription(bus_subscription(v)?)),
                },
                subscription: match m.get("subscription") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(bus_subscription(v)?),
                },
            },
            "unregister_push" => C::UnregisterPush {
                id: bus_str(m, "id")?,
            },
            _ => return Err(Verdict::UnknownType),
        })
    };
    cmd().map_or_else(BusExpect::from, BusExpect::Ok)
}

fn bus_outcome(r: Result<bus::Command, String>) -> Result<BusExpect, TestCaseError> {
    match r {
        Ok(c) => Ok(BusExpect::Ok(c)),
        Err(e) if e == "unknown message type" => Ok(BusExpect::UnknownType),
        Err(e) if e.trim().is_empty() => Err(TestCaseError::fail("empty bus error message")),
        Err(_) => Ok(BusExpect::Invalid),
    }
}

/// Bus messages built from parts that are sometimes right and often wrong.
fn bus_message_value() -> impl Strategy<Value = Value> {
    // A type, with the fields it takes (none for a wrong type).
    let ty = prop_oneof![
        8 => prop::sample::select(BUS_TYPES).prop_map(|(t, f)| (Value::String(t.into()), f)),
        1 => hostile_string().prop_map(|t| (Value::String(t), &[][..])),
        1 => json_value().prop_map(|t| (t, &[][..])),
    ];
    let strings = || {
        prop_oneof![
            3 => vec(hostile_string().prop_map(Value::String), 0..4).prop_map(Value::Array),
            1 => json_value(),
        ]
    };
    let status = prop_oneof![
        4 => prop::sample::select(vec!["online", "away", "busy", "offline"])
            .prop_map(|s| Value::String(s.into())),
        1 => prop::sample::select(vec!["sleeping", "Online", ""]).prop_map(|s| Value::String(s.into())),
        1 => json_value(),
    ];
    let keys =
        (hostile_string(), hostile_string()).prop_map(|(p, a)| json!({"p256dh": p, "auth": a}));
    let subscription = prop_oneof![
        3 => (hostile_string(), keys, prop::option::of(json_value())).prop_map(|(e, k, x)| {
            let mut s = json!({"endpoint": e, "keys": k});
            if let Some(x) = x {
                s["expirationTime"] = x;
            }
            s
        }),
        1 => json_value(),
    ];
    let since = prop_oneof![
        2 => hostile_string().prop_map(Value::String),
        2 => btree_map(hostile_string(), hostile_string().prop_map(Value::String), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ];
    let text = || prop_oneof![3 => hostile_string().prop_map(Value::String), 1 => json_value()];
    let fields = (
        prop::option::weighted(0.9, strings()),
        prop::option::weighted(0.9, strings()),
        prop::option::weighted(0.9, since),
        prop::option::weighted(0.9, status),
        prop::option::weighted(0.9, text()),
        prop::option::weighted(0.9, text()),
        prop::option::weighted(0.9, text()),
        prop::option::weighted(0.9, text()),
        prop::option::weighted(0.9, strings()),
        prop::option::weighted(0.9, text()),
        prop::option::weighted(0.9, prop_oneof![text(), subscription.clone()]),
        prop::option::weighted(0.9, subscription),
    );
    let names = [
        "events",
        "rooms",
        "since",
        "status",
        "activity",
        "recipient",
        "conversation_id",
        "id",
        "ids",
        "platform",
        "token",
        "subscription",
    ];
    // A message carries most of its type's fields and now and then others.
    (
        prop::option::weighted(0.95, ty),
        fields,
        vec(0u8..100, 12),
        prop::option::of((hostile_string(), json_value())),
    )
        .prop_map(move |(ty, f, coins, extra)| {
            let all = [f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, f.8, f.9, f.10, f.11];
            let own: &[&str] = ty.as_ref().map_or(&[], |(_, own)| own);
            let mut m = Map::new();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            for ((name, v), coin) in names.iter().zip(all).zip(coins) {
                let keep = if own.contains(name) {
                    coin < 85
                } else {
                    coin < 10
                };
                if let (true, Some(v)) = (keep, v) {
                    m.insert((*name).to_owned(), v);
                }
            }
            if let Some((t, _)) = ty {
                m.insert("type".into(), t);
            }
            Value::Object(m)
        })
}

/// Valid bus commands.
fn bus_command() -> impl Strategy<Value = bus::Command> {
    use bus::Command as C;
    let s = hostile_string;
    let strings = || vec(s(), 0..4);
    let status = prop::sample::select(vec![
        Status::Online,
        Status::Away,
        Status::Busy,
        Status::Offline,
    ]);
    let since = prop::option::of(prop_oneof![
        s().prop_map(bus::Since::All),
        btree_map(s(), s(), 0..3).prop_map(bus::Since::PerStream),
    ]);
    let sub = (s(), s(), s()).prop_map(|(endpoint, p256dh, auth)| bus::PushSubscription {
        endpoint,
        keys: bus::PushKeys { p256dh, auth },
    });
    let token = prop::option::of(prop_oneof![
        s().prop_map(bus::PushToken::Text),
        sub.clone().prop_map(bus::PushToken::Subscription),
    ]);
    prop_oneof![
        (strings(), strings(), since).prop_map(|(events, rooms, since)| C::Subscribe {
            events,
            rooms,
            since
        }),
        (strings(), strings()).prop_map(|(events, rooms)| C::Unsubscribe { events, rooms }),
        (status, prop::option::of(s()))
            .prop_map(|(status, activity)| C::Presence { status, activity }),
        (s(), s()).prop_map(|(recipient, conversation_id)| C::Typing {
            recipient,
            conversation_id
        }),
        LazyJust::new(|| C::Ping),
        (prop::option::of(s()), strings()).prop_map(|(id, ids)| C::Ack { id, ids }),
        (s(), token, prop::option::of(sub)).prop_map(|(platform, token, subscription)| {
            C::RegisterPush {
                platform,
                token,
                subscription,
            }
        }),
        s().prop_map(|id| C::UnregisterPush { id }),
    ]
}

fn bus_subscription_json(s: &bus::PushSubscription) -> Value {
    json!({"endpoint": s.endpoint, "expirationTime": null, "keys": {"p256dh": s.keys.p256dh, "auth": s.keys.auth}})
}

/// The JSON a client sends for `cmd`.
fn bus_encode(cmd: &bus::Command) -> Value {
    use bus::Command as C;
    match cmd {
        C::Subscribe {
            events,
            rooms,
            since,
        } => {
            let mut v = json!({"type": "subscribe", "events": events, "rooms": rooms});
            match since {
                Some(bus::Since::All(s)) => v["since"] = json!(s),
                Some(bus::Since::PerStream(m)) => v["since"] = json!(m),
                None => {}
            }
            v
        }
        C::Unsubscribe { events, rooms } => {
            json!({"type": "unsubscribe", "events": events, "rooms": rooms})
        }
        C::Presence { status, activity } => {
            json!({"type": "presence", "status": status.as_str(), "activity": activity})
        }
        C::Typing {
            recipient,
            conversation_id,
        } => {
            json!({"type": "typing", "recipient": recipient, "conversation_id": conversation_id})
        }
        C::Ping => json!({"type": "ping"}),
        C::Ack { id, ids } => json!({"type": "ack", "id": id, "ids": ids}),
        C::RegisterPush {
            platform,
            token,
            subscription,
        } => {
            let mut v = json!({"type": "register_push", "platform": platform});
            match token {
                Some(bus::PushToken::Text(t)) => v["token"] = json!(t),
                Some(bus::PushToken::Subscription(s)) => v["token"] = bus_subscription_json(s),
                None => {}
            }
            if let Some(s) = subscription {
                v["subscription"] = bus_subscription_json(s);
            }
            v
        }
        C::UnregisterPush { id } => json!({"type": "unregister_push", "id": id}),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text never panics, errors carry a message, `Ok` only for valid JSON.
    #[test]
    fn bus_decode_arbitrary_text(s in prop_oneof![
        any::<String>(),
        vec(any::<u8>(), 0..256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        json_text(),
        bus_command().prop_map(|c| bus_encode(&c).to_string()),
    ]) {
        match bus::decode(&s) {
            Ok(_) => prop_assert!(is_json(&s), "accepted non-JSON {s:?}"),
            Err(e) => prop_assert!(!e.trim().is_empty()),
        }
    }

    /// Structured but wrong messages decode exactly as the reference model says, and
    /// "unknown message type" is said of the type and of nothing else.
    #[test]
    fn bus_decode_agrees_with_model(v in bus_message_value()) {
        let expect = bus_model(&v);
        let got = bus_outcome(bus::decode(&v.to_string()))?;
        if expect != BusExpect::Unmodeled {
            prop_assert_eq!(got, expect, "for {}", v);
        }
    }

    /// Valid messages decode to the command they were built from.
    #[test]
    fn bus_decode_round_trip(cmd in bus_command(), extra in prop::option::of((hostile_string(), json_value()))) {
        let mut v = bus_encode(&cmd);
        if let Some((k, x)) = extra {
            if v.get(&k).is_none() && !["token", "subscription", "since", "id", "ids", "activity", "events", "rooms"].contains(&k.as_str()) {
                v[k] = x;
            }
        }
        prop_assert_eq!(bus::decode(&v.to_string()), Ok(cmd), "for {}", v);
    }

    /// Valid messages with edits never panic; non-JSON is a clean error; what decodes is
    /// what the model makes of it (one way only, as for Pusher).
    #[test]
    fn bus_decode_mutated(cmd in bus_command(), edits in vec(edit(), 1..4)) {
        let text = mutate(&bus_encode(&cmd).to_string(), &edits);
        let got = bus_outcome(bus::decode(&text))?;
        if !is_json(&text) {
            prop_assert_eq!(&got, &BusExpect::Invalid, "for {:?}", text);
        }
        if let (BusExpect::Ok(_), Ok(v)) = (&got, serde_json::from_str::<Value>(&text)) {
            let expect = bus_model(&v);
            if expect != BusExpect::Unmodeled {
                prop_assert_eq!(got, expect, "for {:?}", text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tag filters and tags.

/// A filter as the grammar builds it: one JSON object with field comparisons and
/// combinators, all of which must match.
#[derive(Debug, Clone)]
struct FNode(Vec<FEntry>);

#[derive(Debug, Clone)]
enum FEntry {
    Field(String, Vec<FOp>),
    And(Vec<FNode>),
    Or(Vec<FNode>),
    Not(Box<FNode>),
}

#[derive(Debug, Clone)]
enum FOp {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Prefix(Value),
}

const TAG_KEYS: &[&str] = &["a", "b", "team", "é", ""];
const TAG_VALUES: &[&str] = &["x", "y", "xy", "1", "true", "", "😀"];

fn tag_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(TAG_VALUES).prop_map(|s| Value::String(s.into())),
        1 => Just(json!(1)),
        1 => Just(json!(true)),
        1 => Just(json!(1.5)),
    ]
}

fn fop() -> impl Strategy<Value = FOp> {
    prop_oneof![
        tag_scalar().prop_map(FOp::Eq),
        tag_scalar().prop_map(FOp::Neq),
        vec(tag_scalar(), 0..4).prop_map(FOp::In),
        vec(tag_scalar(), 0..4).prop_map(FOp::Nin),
        any::<bool>().prop_map(FOp::Exists),
        tag_scalar().prop_map(FOp::Prefix),
    ]
}

fn fnode(depth: u32, width: usize) -> BoxedStrategy<FNode> {
    let field = (prop::sample::select(TAG_KEYS), vec(fop(), 0..3))
        .prop_map(|(k, ops)| FEntry::Field(k.to_owned(), ops));
    let leaf = vec(field, 0..3).prop_map(FNode);
    leaf.prop_recursive(depth, 256, width as u32, move |inner| {
        let entry = prop_oneof![
            vec(inner.clone(), 0..width).prop_map(FEntry::And),
            vec(inner.clone(), 0..width).prop_map(FEntry::Or),
            inner.prop_map(|n| FEntry::Not(Box::new(n))),
        ];
        (
            vec(entry, 1..3),
            vec((prop::sample::select(TAG_KEYS), vec(fop(), 1..3)), 0..2),
        )
            .prop_map(|(combinators, fields)| {
                let mut es: Vec<FEntry> = fields
                    .into_iter()
                    .map(|(k, ops)| FEntry::Field(k.to_owned(), ops))
                    .collect();
                es.extend(combinators);
                FNode(es)
            })
    })
    .boxed()
}

impl FNode {
    /// The filter's JSON. Keys of one object are unique: later entries of the same key are
    /// left out (the model does the same).
    fn json(&self) -> Value {
        let mut m = Map::new();
        for e in &self.0 {
            let (k, v) = match e {
                FEntry::Field(k, ops) => {
                    let mut o = Map::new();
                    for op in ops {
                        let (name, arg) = match op {
                            FOp::Eq(v) => ("eq", v.clone()),
                            FOp::Neq(v) => ("neq", v.clone()),
                            FOp::In(vs) => ("in", Value::Array(vs.clone())),
                            FOp::Nin(vs) => ("nin", Value::Array(vs.clone())),
                            FOp::Exists(b) => ("exists", Value::Bool(*b)),
                            FOp::Prefix(v) => ("prefix", v.clone()),
                        };
                        o.entry(name).or_insert(arg);
                    }
                    (k.as_str(), Value::Object(o))
                }
                FEntry::And(ns) => ("and", Value::Array(ns.iter().map(FNode::json).collect())),
                FEntry::Or(ns) => ("or", Value::Array(ns.iter().map(FNode::json).collect())),
                FEntry::Not(n) => ("not", n.json()),
            };
            m.entry(k).or_insert(v);
        }
        Value::Object(m)
    }

    /// Whether the filter's JSON (not this tree: duplicate keys are dropped there) matches
    /// `tags`, by the documented semantics.
    fn model_matches(v: &Value, tags: &Tags) -> bool {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        v.as_object()
            .unwrap()
            .iter()
            .all(|(k, arg)| match k.as_str() {
                "and" => arg
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| Self::model_matches(n, tags)),
                "or" => arg
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| Self::model_matches(n, tags)),
                "not" => !Self::model_matches(arg, tags),
                field => {
                    let tag = tags.get(field);
                    arg.as_object().unwrap().iter().all(|(op, x)| {
                        let list = || x.as_array().unwrap().iter().map(text).collect::<Vec<_>>();
                        match (op.as_str(), tag) {
                            ("exists", t) => t.is_some() == x.as_bool().unwrap(),
                            (_, None) => false,
                            ("eq", Some(t)) => *t == text(x),
                            ("neq", Some(t)) => *t != text(x),
                            ("in", Some(t)) => list().contains(t),
                            ("nin", Some(t)) => !list().contains(t),
                            ("prefix", Some(t)) => t.starts_with(&text(x)),
                            _ => unreachable!("generated ops only"),
                        }
                    })
                }
            })
    }

    /// (filter objects, deepest combinator nesting) of a filter's JSON.
    fn model_size(v: &Value, depth: usize) -> (usize, usize) {
        let mut nodes = 1;
        let mut deepest = depth;
        for (k, arg) in v.as_object().unwrap() {
            let subs: Vec<&Value> = match k.as_str() {
                "and" | "or" => arg.as_array().unwrap().iter().collect(),
                "not" => vec![arg],
                _ => continue,
            };
            for s in subs {
                let (n, d) = Self::model_size(s, depth + 1);
                nodes += n;
                deepest = deepest.max(d);
            }
        }
        (nodes, deepest)
    }
}

fn tags_strategy() -> impl Strategy<Value = Tags> {
    btree_map(
        prop::sample::select(TAG_KEYS).prop_map(str::to_owned),
        prop::sample::select(TAG_VALUES).prop_map(str::to_owned),
        0..5,
    )
}

/// The reference model of `parse_tags`: an object of at most 32 entries whose values are
/// strings, numbers or booleans (numbers and booleans as their JSON text), keys and values
/// at most 128 bytes.
fn tags_model(v: &Value) -> Option<Tags> {
    let obj = v.as_object()?;
    if obj.len() > 32 {
        return None;
    }
    obj.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => return None,
            };
            (k.len() <= 128 && s.len() <= 128).then(|| (k.clone(), s))
        })
        .collect()
}

fn tags_value() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        6 => (0usize..140, any::<char>()).prop_map(|(n, c)| Value::String(c.to_string().repeat(n / c.len_utf8().max(1)))),
        2 => hostile_string().prop_map(Value::String),
        2 => json_leaf(),
        1 => json_value(),
    ];
    let key = prop_oneof![
        3 => hostile_string(),
        1 => (120usize..140).prop_map(|n| "k".repeat(n)),
    ];
    let small = prop_oneof![
        "[a-z]{0,8}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
    ];
    prop_oneof![
        6 => btree_map(key, value, 0..40).prop_map(|m| Value::Object(m.into_iter().collect())),
        3 => btree_map("[a-z]{1,8}", small, 28..36).prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary JSON (deep nesting included) never panics the filter parser, and whatever
    /// it accepts stays within its bounds.
    #[test]
    fn filter_parse_arbitrary_json(v in prop_oneof![
        json_value(),
        fnode(12, 3).prop_map(|n| n.json()),
        (fnode(4, 3), json_value()).prop_map(|(n, x)| {
            // One wrong value somewhere in a grammar-built filter.
            let mut v = n.json();
            if let Some((_, slot)) = v.as_object_mut().and_then(|m| m.iter_mut().next()) {
                *slot = x;
            }
            v
        }),
        json_text().prop_map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::Null)),
    ], tags in tags_strategy()) {
        match Filter::parse(&v) {
            Ok(f) => {
                let (nodes, depth) = FNode::model_size(&v, 0);
                prop_assert!(nodes <= 64 && depth <= 8, "accepted {} ({nodes} nodes, depth {depth})", v);
                let _ = f.matches(&tags);
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// Filters built from the grammar parse, and match exactly the tags the documented
    /// semantics say they match.
    #[test]
    fn filter_matches_agree_with_model(node in fnode(3, 4), tags in tags_strategy()) {
        let v = node.json();
        let f = Filter::parse(&v).map_err(|e| TestCaseError::fail(format!("{v} refused: {e}")))?;
        prop_assert_eq!(f.matches(&tags), FNode::model_matches(&v, &tags), "filter {} tags {:?}", v, tags);
    }

    /// A filter is accepted iff it has at most 64 filter objects nested at most 8
    /// combinators deep.
    #[test]
    fn filter_bounds_agree_with_model(node in prop_oneof![
        fnode(12, 3),
        (0usize..14).prop_map(|d| {
            let mut n = FNode(vec![FEntry::Field("a".into(), vec![FOp::Exists(true)])]);
            for _ in 0..d {
                n = FNode(vec![FEntry::Not(Box::new(n))]);
            }
            n
        }),
        (0usize..100).prop_map(|w| FNode(vec![FEntry::Or(vec![FNode(vec![]); w])])),
    ]) {
        let v = node.json();
        let (nodes, depth) = FNode::model_size(&v, 0);
        let ok = nodes <= 64 && depth <= 8;
        prop_assert_eq!(Filter::parse(&v).is_ok(), ok, "{} ({} nodes, depth {})", v, nodes, depth);
    }

    /// `parse_tags` agrees with the reference model, value for value.
    #[test]
    fn tags_agree_with_model(v in tags_value()) {
        prop_assert_eq!(filter::parse_tags(&v).ok(), tags_model(&v), "for {}", v);
    }
}

// ---------------------------------------------------------------------------------------
// Identifiers.

/// Control characters (Unicode category Cc), listed: U+0000–U+001F and U+007F–U+009F.
fn model_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f)
}

/// The user-id rule: 1 to 128 bytes, no control characters, no `/`.
fn model_user_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && !s.chars().any(|c| model_control(c) || c == '/')
}

/// Pusher's channel-name characters.
fn model_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-=@,.;".contains(c)
}

/// The channel-name rule: 1 to 200 bytes of `[A-Za-z0-9_\-=@,.;]`, or
/// `#server-to-user-{id}` with `{id}` a user id in those characters (at most 200 bytes in
/// all).
fn model_channel(s: &str) -> Result<(), NameError> {
    if let Some(user) = s.strip_prefix("#server-to-user-") {
        if user.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 200 || user.len() > 128 {
            return Err(NameError::TooLong);
        }
        if !user.chars().all(model_name_char) {
            return Err(NameError::BadChar);
        }
        assert!(model_user_id(user));
        return Ok(());
    }
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 200 {
        return Err(NameError::TooLong);
    }
    if !s.chars().all(model_name_char) {
        return Err(NameError::BadChar);
    }
    Ok(())
}

/// Strings of a given shape, with lengths around the limits.
fn id_like(charset: &'static str) -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        8 => prop::sample::select(charset.chars().collect::<Vec<_>>()),
        1 => any::<char>(),
        1 => prop::sample::select(vec!['/', '\0', '\t', '\u{7f}', '\u{85}', '\u{9f}', '\u{a0}', ' ', '#', ':', 'é', '😀', '\u{200b}']),
    ];
    let pure = prop::sample::select(charset.chars().collect::<Vec<_>>());
    let prefix = prop::sample::select(vec![
        "",
        "",
        "",
        "private-",
        "presence-",
        "private-encrypted-",
        "cache-",
        "#server-to-user-",
        "#server-to-user",
        "#",
    ]);
    let boundary =
        prop::sample::select(vec![0usize, 1, 127, 128, 129, 183, 184, 185, 199, 200, 201]);
    prop_oneof![
        (boundary.clone(), pure.clone())
            .prop_map(|(n, c)| format!("#server-to-user-{}", c.to_string().repeat(n))),
        (prefix.clone(), boundary, any::<bool>(), pure.clone()).prop_map(|(p, n, whole, c)| {
            // Exactly n bytes after the prefix, or in all.
            let n = if whole { n.saturating_sub(p.len()) } else { n };
            format!("{p}{}", c.to_string().repeat(n))
        }),
        (prefix.clone(), vec(ch, 0..40))
            .prop_map(|(p, cs)| format!("{p}{}", String::from_iter(cs))),
        (prefix, vec(pure, 100..220)).prop_map(|(p, cs)| format!("{p}{}", String::from_iter(cs))),
        (
            prop::sample::select(vec!['a', 'é', '😀', '/', '\u{1}']),
            120usize..140,
            0usize..4
        )
            .prop_map(|(c, n, k)| {
                let mut s = "u".repeat(n - c.len_utf8().min(n));
                for _ in 0..k {
                    s.push(c);
                }
                s
            }),
        any::<String>(),
    ]
}

const NAME_CHARS: &str = "abcXYZ019_-=@,.;";

fn socket_id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u32>(), any::<u64>()).prop_map(|(a, b)| format!("{a}.{b}")),
        "[0-9]{0,12}\\.[0-9]{0,24}",
        "0{0,30}[0-9]{1,3}\\.0{0,30}[0-9]{1,3}",
        "[0-9.+\\- ]{0,12}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        Just("4294967296.1".to_owned()),
        Just("1.18446744073709551616".to_owned()),
        any::<String>(),
    ]
}

/// The socket-id rule: `^\d+\.\d+$` whose halves fit `u32` and `u64`.
fn model_socket_id(s: &str) -> Option<(u32, u64)> {
    let (a, b) = s.split_once('.')?;
    let num = |p: &str, max: u128| -> Option<u128> {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let p = p.trim_start_matches('0');
        if p.len() > 20 {
            return None;
        }
        let n = if p.is_empty() {
            0
        } else {
            p.parse::<u128>().ok()?
        };
        (n <= max).then_some(n)
    };
    Some((
        num(a, u128::from(u32::MAX))? as u32,
        num(b, u128::from(u64::MAX))? as u64,
    ))
}

proptest! {
    #![proptest_config(config())]

    /// `ChannelName::parse` agrees with the reference model, error kind included.
    #[test]
    fn channel_names_agree_with_model(s in id_like(NAME_CHARS)) {
        let got = ChannelName::parse(&s).map(|c| {
            assert_eq!(c.as_str(), s);
        });
        prop_assert_eq!(got, model_channel(&s), "for {:?} ({} bytes)", s, s.len());
    }

    /// `check_name` is the channel-name rule without the user form; `check_event_name`
    /// limits length only (1 to 200 bytes).
    #[test]
    fn event_names_agree_with_model(s in id_like(NAME_CHARS)) {
        let expect_event = || if s.is_empty() {
            Err(NameError::Empty)
        } else if s.len() > 200 {
            Err(NameError::TooLong)
        } else {
            Ok(())
        };
        prop_assert_eq!(ids::check_event_name(&s), expect_event());
        let expect_name = expect_event().and_then(|()| {
            if s.chars().all(model_name_char) { Ok(()) } else { Err(NameError::BadChar) }
        });
        prop_assert_eq!(ids::check_name(&s), expect_name);
    }

    /// `UserId::parse` agrees with the reference model.
    #[test]
    fn user_ids_agree_with_model(s in id_like("abcXYZ019_-.@:|")) {
        prop_assert_eq!(UserId::parse(&s).is_ok(), model_user_id(&s), "for {:?} ({} bytes)", s, s.len());
        if let Ok(u) = UserId::parse(&s) {
            prop_assert_eq!(u.as_str(), s.as_str());
        }
    }

    /// `SocketId::parse` agrees with the reference model; what it accepts prints in the
    /// canonical form and reads back (as text and as JSON) to the same id.
    #[test]
    fn socket_ids_agree_with_model(s in socket_id_like()) {
        let got = SocketId::parse(&s);
        let model = model_socket_id(&s);
        prop_assert_eq!(got.is_some(), model.is_some(), "for {:?}", s);
        let json: Result<SocketId, _> = serde_json::from_value(Value::String(s.clone()));
        prop_assert_eq!(json.ok(), got);
        if let (Some(id), Some((a, b))) = (got, model) {
            prop_assert_eq!(id.to_string(), format!("{a}.{b}"));
            prop_assert_eq!(SocketId::parse(&id.to_string()), Some(id));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Signatures.

fn app(key: &str, secret: &str) -> App {
    App::from_config(&AppConfig {
        key: key.to_owned(),
        secret: secret.to_owned(),
        ..AppConfig::default()
    })
}

/// Reference HMAC-SHA256, hex, straight from the `hmac` crate.
fn hmac_hex(secret: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// How a signature (or `key:signature`) is tampered with.
#[derive(Debug, Clone)]
enum Tamper {
    None,
    Edits(Vec<Edit>),
    Upper,
    Append(String),
    Replace(String),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        2 => Just(Tamper::None),
        4 => vec(edit(), 1..3).prop_map(Tamper::Edits),
        1 => Just(Tamper::Upper),
        1 => "[0-9a-f:]{0,3}".prop_map(Tamper::Append),
        1 => hostile_string().prop_map(Tamper::Replace),
    ]
}

impl Tamper {
    fn apply(&self, s: &str) -> String {
        match self {
            Tamper::None => s.to_owned(),
            Tamper::Edits(e) => mutate(s, e),
            Tamper::Upper => s.to_uppercase(),
            Tamper::Append(x) => format!("{s}{x}"),
            Tamper::Replace(x) => x.clone(),
        }
    }
}

/// App keys: Pusher keys are hex; anything without `:` (the separator of `key:signature`).
fn app_key() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9a-f]{20}", "[^:]{1,24}"]
}

fn channel_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "(private-|presence-|private-encrypted-)[A-Za-z0-9_=@,.;-]{1,40}",
        "#server-to-user-[A-Za-z0-9_=@,.;-]{1,20}",
    ]
}

fn socket_id() -> impl Strategy<Value = SocketId> {
    (any::<u32>(), any::<u64>()).prop_map(|(a, b)| SocketId::parse(&format!("{a}.{b}")).unwrap())
}

proptest! {
    #![proptest_config(config())]

    /// `verify` accepts exactly the reference signature: a correct one always verifies,
    /// a tampered one never does, nor one over another message.
    #[test]
    fn signatures_verify_exactly(secret in any::<String>(), msg in vec(any::<u8>(), 0..128), other in vec(any::<u8>(), 0..128), t in tamper()) {
        let s = Secret::new(&secret);
        let good = hmac_hex(secret.as_bytes(), &msg);
        prop_assert_eq!(auth::sign(&s, &msg), good.clone());
        let sig = t.apply(&good);
        prop_assert_eq!(auth::verify(&s, &msg, &sig), sig == good, "sig {:?}", sig);
        prop_assert_eq!(auth::verify(&s, &other, &good), other == msg);
    }

    /// A channel `auth` is accepted iff it is `key:HMAC(socket:channel[:channel_data])`.
    #[test]
    fn channel_auth_exactly(
        key in app_key(), secret in "\\PC{1,32}", socket in socket_id(), channel in channel_name(),
        data in prop::option::of(hostile_string()), other_socket in socket_id(), t in tamper(),
    ) {
        let app = app(&key, &secret);
        let msg = match &data {
            Some(d) => format!("{socket}:{channel}:{d}"),
            None => format!("{socket}:{channel}"),
        };
        let good = format!("{key}:{}", hmac_hex(secret.as_bytes(), msg.as_bytes()));
        let given = t.apply(&good);
        prop_assert_eq!(auth::channel_auth_ok(&app, socket, &channel, data.as_deref(), &given), given == good, "auth {:?}", given);
        // Right signature, wrong context.
        prop_assert_eq!(auth::channel_auth_ok(&app, other_socket, &channel, data.as_deref(), &good), other_socket == socket);
        let flipped = if data.is_some() { None } else { Some("") };
        prop_assert!(!auth::channel_auth_ok(&app, socket, &channel, flipped, &good));
    }

    /// A sign-in `auth` is accepted iff it is `key:HMAC(socket::user::user_data)`.
    #[test]
    fn user_auth_exactly(
        key in app_key(), secret in "\\PC{1,32}", socket in socket_id(), user_data in hostile_string(),
        other_socket in socket_id(), t in tamper(),
    ) {
        let app = app(&key, &secret);
        let good = format!("{key}:{}", hmac_hex(secret.as_bytes(), format!("{socket}::user::{user_data}").as_bytes()));
        let given = t.apply(&good);
        prop_assert_eq!(auth::user_auth_ok(&app, socket, &user_data, &given), given == good, "auth {:?}", given);
        prop_assert_eq!(auth::user_auth_ok(&app, other_socket, &user_data, &good), other_socket == socket);
    }

    /// The API string to sign is `METHOD\npath\nk=v&...` with keys lower-cased and sorted
    /// and `auth_signature` (in any case) left out: the order of the parameters does not
    /// matter, and changing any other parameter changes it, so the old signature fails.
    #[test]
    fn api_string_to_sign_model(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        path in "/apps/[a-z0-9-]{1,10}(/[a-z_]{1,10}){0,3}",
        params in vec(("[a-zA-Z_]{1,10}", "[^&]{0,12}"), 0..8),
        signature in prop::option::of((vec(any::<bool>(), 14).prop_map(|up| {
                // ASCII case variants only: `(?i)` would also give `ſ` for `s`.
                "auth_signature"
                    .chars()
                    .zip(up)
                    .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                    .collect::<String>()
            }), "[0-9a-f]{0,64}")),
        shuffle in any::<u64>(),
        change in (any::<usize>(), "[^&]{1,12}"),
    ) {
        let mut params: Vec<(String, String)> = params;
        let s = auth::api_string_to_sign(method, &path, &params);
        // Reference: lower-case keys, drop auth_signature, sort, join.
        let mut pairs: Vec<(String, String)> = params.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .filter(|(k, _)| k != "auth_signature")
            .collect();
        pairs.sort();
        let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        prop_assert_eq!(&s, &format!("{method}\n{path}\n{}", q.join("&")));
        // Order and the signature itself do not matter.
        let mut shuffled = params.clone();
        let n = shuffled.len().max(1);
        shuffled.rotate_left((shuffle as usize) % n);
        if let Some(sig) = signature {
            shuffled.insert((shuffle as usize >> 8) % (shuffled.len() + 1), sig);
        }
        prop_assert_eq!(auth::api_string_to_sign(method, &path, &shuffled), s.clone());
        // Any other change does.
        let secret = Secret::new("secret");
        let sig = auth::sign(&secret, s.as_bytes());
        let signed: Vec<usize> = (0..params.len()).filter(|&i| !params[i].0.eq_ignore_ascii_case("auth_signature")).collect();
        if !signed.is_empty() {
            let i = signed[change.0 % signed.len()];
            if params[i].1 != change.1 {
                params[i].1 = change.1.clone();
                let s2 = auth::api_string_to_sign(method, &path, &params);
                prop_assert_ne!(&s2, &s);
                prop_assert!(!auth::verify(&secret, s2.as_bytes(), &sig));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bus tokens.

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A JWT signed by hand: `alg` names the MAC used (`none`: no signature), `header` is sent
/// as given.
fn hand_token(header: &Value, payload: &Value, secret: &[u8], alg: &str) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], msg: &str) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(secret).unwrap();
        m.update(msg.as_bytes());
        m.finalize().into_bytes().to_vec()
    }
    let sig = match alg {
        "HS256" => mac::<Hmac<Sha256>>(secret, &msg),
        "HS384" => mac::<Hmac<Sha384>>(secret, &msg),
        "HS512" => mac::<Hmac<Sha512>>(secret, &msg),
        _ => Vec::new(),
    };
    format!("{msg}.{}", b64(&sig))
}

fn valid_user_id() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_.@-]{1,40}", "[^/\\p{Cc}]{1,32}"]
        .prop_filter("user id rule", |s| model_user_id(s))
}

fn valid_claims() -> impl Strategy<Value = (String, BusClaims)> {
    (
        app_key(),
        valid_user_id(),
        60u64..315_360_000,
        vec(hostile_string(), 0..3),
        vec(hostile_string(), 0..3),
    )
        .prop_map(|(iss, sub, ttl, watchlist, channels)| {
            let claims = BusClaims {
                iss: iss.clone(),
                sub,
                exp: switchboard::clock::now_secs() + ttl,
                watchlist,
                channels,
            };
            (iss, claims)
        })
}

/// Ways to forge a bus token.
#[derive(Debug, Clone)]
enum Forgery {
    WrongSecret(String),
    /// Signed correctly with another algorithm (or none) and saying so.
    OtherAlg(&'static str),
    /// Says HS256, signed with another MAC.
    AlgMismatch(&'static str),
    /// Says an asymmetric algorithm, MAC'd with the secret (the classic confusion).
    Asymmetric(&'static str),
    Expired(u64),
    WrongIss(String),
    BadSub(String),
    /// A claim removed, or replaced by a value of the wrong type.
    Claim(&'static str, Option<Value>),
}

fn forgery() -> impl Strategy<Value = Forgery> {
    let bad_sub = prop_oneof![
        Just(String::new()),
        "[a-z]{0,5}/[a-z]{0,5}",
        "[a-z]{0,5}[\\x00-\\x1f\\x7f][a-z]{0,5}",
        "u{129,140}",
    ];
    prop_oneof![
        "\\PC{1,16}".prop_map(Forgery::WrongSecret),
        prop::sample::select(vec!["none", "None", "NONE", "HS384", "HS512", ""])
            .prop_map(Forgery::OtherAlg),
        prop::sample::select(vec!["HS384", "HS512", "none"]).prop_map(Forgery::AlgMismatch),
        prop::sample::select(vec!["RS256", "ES256", "PS256", "EdDSA", "ES384"])
            .prop_map(Forgery::Asymmetric),
        (1u64..100_000_000).prop_map(Forgery::Expired),
        "\\PC{0,24}".prop_map(Forgery::WrongIss),
        bad_sub.prop_map(Forgery::BadSub),
        (
            prop::sample::select(vec!["exp", "iss", "sub"]),
            prop::option::of(prop_oneof![
                json_leaf(),
                Just(json!(1e12)),
                Just(json!(-1)),
                Just(json!("9999999999")),
                Just(json!(["x"])),
            ]),
        )
            .prop_map(|(c, v)| Forgery::Claim(c, v)),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Tokens minted for valid claims, or signed by hand with HS256, verify to those
    /// claims; their issuer reads back.
    #[test]
    fn bus_tokens_valid_verify((key, claims) in valid_claims(), secret in "\\PC{1,32}", typ in prop::option::of("JWT|jwt|at\\+jwt")) {
        let app = app(&key, &secret);
        let token = auth::mint_bus_token(&app, &claims);
        prop_assert_eq!(auth::verify_bus_token(&app, &token), Ok(claims.clone()));
        prop_assert_eq!(auth::bus_token_issuer(&token), Some(key.clone()));
        let mut header = json!({"alg": "HS256"});
        if let Some(t) = typ {
            header["typ"] = json!(t);
        }
        let by_hand = hand_token(&header, &serde_json::to_value(&claims).unwrap(), secret.as_bytes(), "HS256");
        prop_assert_eq!(auth::verify_bus_token(&app, &by_hand), Ok(claims));
    }

    /// Any edit of a valid token (a character deleted, inserted, replaced, the token
    /// truncated, a part duplicated) is refused.
    #[test]
    fn bus_tokens_mutated_refused((key, claims) in valid_claims(), secret in "\\PC{1,32}", edits in vec(edit(), 1..3)) {
        let app = app(&key, &secret);
        let token = auth::mint_bus_token(&app, &claims);
        let bad = mutate(&token, &edits);
        if bad != token {
            prop_assert!(auth::verify_bus_token(&app, &bad).is_err(), "accepted {:?} (from {:?})", bad, token);
        }
        let _ = auth::bus_token_issuer(&bad);
    }

    /// Forged tokens are refused: another secret, another or no algorithm, an expired,
    /// foreign or malformed claim.
    #[test]
    fn bus_tokens_forged_refused((key, claims) in valid_claims(), secret in "\\PC{1,32}", f in forgery()) {
        let app = app(&key, &secret);
        let mut payload = serde_json::to_value(&claims).unwrap();
        let hs256 = json!({"alg": "HS256", "typ": "JWT"});
        let s = secret.as_bytes();
        let token = match &f {
            Forgery::WrongSecret(other) => {
                if other == &secret {
                    return Ok(());
                }
                hand_token(&hs256, &payload, other.as_bytes(), "HS256")
            }
            Forgery::OtherAlg(alg) => hand_token(&json!({"alg": alg, "typ": "JWT"}), &payload, s, alg),
            Forgery::AlgMismatch(alg) => hand_token(&hs256, &payload, s, alg),
            Forgery::Asymmetric(alg) => {
                let t = hand_token(&hs256, &payload, s, "HS256");
                let sig = t.rsplit('.').next().unwrap().to_owned();
                let h = hand_token(&json!({"alg": alg, "typ": "JWT"}), &payload, s, "none");
                format!("{h}{sig}")
            }
            Forgery::Expired(ago) => {
                payload["exp"] = json!(switchboard::clock::now_secs().saturating_sub(*ago));
                hand_token(&hs256, &payload, s, "HS256")
            }
            Forgery::WrongIss(iss) => {
                if iss == &key {
                    return Ok(());
                }
                payload["iss"] = json!(iss);
                hand_token(&hs256, &payload, s, "HS256")
            }
            Forgery::BadSub(sub) => {
                prop_assert!(!model_user_id(sub));
                payload["sub"] = json!(sub);
                hand_token(&hs256, &payload, s, "HS256")
            }
            Forgery::Claim(c, v) => {
                match v {
                    None => { payload.as_object_mut().unwrap().remove(*c); }
                    Some(v) => {
                        // A valid value of the right type is no forgery.
                        let fine = match *c {
                            "exp" => v.as_u64().is_some_and(|e| e > switchboard::clock::now_secs() + 5),
                            "iss" => v.as_str() == Some(key.as_str()),
                            _ => v.as_str().is_some_and(model_user_id),
                        };
                        if fine {
                            return Ok(());
                        }
                        payload[*c] = v.clone();
                    }
                }
                hand_token(&hs256, &payload, s, "HS256")
            }
        };
        prop_assert!(auth::verify_bus_token(&app, &token).is_err(), "accepted {:?} ({:?})", token, f);
    }

    /// Reading the issuer of arbitrary text or of a token with an arbitrary payload never
    /// panics, and gives the payload's string `iss` whatever the signature.
    #[test]
    fn bus_token_issuer_arbitrary(
        s in any::<String>(),
        payload in prop_oneof![
            json_value(),
            (json_leaf(), btree_map(hostile_string(), json_value(), 0..4)).prop_map(|(iss, m)| {
                let mut m: Map<String, Value> = m.into_iter().collect();
                m.insert("iss".into(), iss);
                Value::Object(m)
            }),
        ],
        header in prop_oneof![
            json_value(),
            prop::sample::select(vec![json!({"alg": "HS256"}), json!({"alg": "HS256", "typ": "JWT"}), json!({"alg": "HS512", "kid": "x"})]),
        ],
    ) {
        let _ = auth::bus_token_issuer(&s);
        let t = hand_token(&header, &payload, b"k", "HS256");
        let iss = auth::bus_token_issuer(&t);
        // A readable header: a known algorithm and fields of the right types.
        let readable = header.get("alg").and_then(Value::as_str).is_some_and(|a| ["HS256", "HS512"].contains(&a))
            && header.as_object().is_some_and(|h| h.iter().all(|(k, v)| k == "alg" || (["typ", "kid"].contains(&k.as_str()) && v.is_string())));
        // serde also reads the claims from an array of them, positionally: not modelled.
        if !payload.is_array() && (readable || iss.is_some()) {
            prop_assert_eq!(iss.as_deref(), payload.get("iss").and_then(Value::as_str), "for {} {}", header, payload);
        }
        prop_assert!(auth::verify_bus_token(&app("k", "k"), &t).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP API, end to end: a real server, signed requests with hostile bodies.

/// Channel names that a trigger could use, valid and not.
fn api_channel() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "(private-|presence-|cache-|private-encrypted-|#server-to-user-)?[a-z0-9]{1,12}".prop_map(Value::String),
        1 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ]
}

/// Overrides of some fields with hostile values.
fn overrides(
    fields: &'static [&'static str],
) -> impl Strategy<Value = Vec<(&'static str, Option<Value>)>> {
    // Two bodies in three keep their shape, so that valid ones get through to a publish.
    prop_oneof![
        2 => Just(Vec::new()),
        1 => vec((prop::sample::select(fields), prop::option::of(json_value())), 1..3),
    ]
}

fn apply_overrides(mut v: Value, o: Vec<(&'static str, Option<Value>)>) -> Value {
    let m = v.as_object_mut().unwrap();
    for (k, x) in o {
        match x {
            Some(x) => m.insert(k.to_owned(), x),
            None => m.remove(k),
        };
    }
    v
}

const TRIGGER_FIELDS: &[&str] = &[
    "name",
    "data",
    "channels",
    "channel",
    "socket_id",
    "info",
    "tags",
    "priority",
    "ttl",
    "idempotency_key",
];

fn trigger_value() -> impl Strategy<Value = Value> {
    let data = prop_oneof![
        3 => "\\PC{0,40}".prop_map(Value::String),
        1 => json_value(),
        1 => (9_000usize..11_000).prop_map(|n| Value::String("d".repeat(n))),
    ];
    let one_of_channels = prop_oneof![
        vec(api_channel(), 1..4).prop_map(|cs| ("channels", Value::Array(cs))),
        api_channel().prop_map(|c| ("channel", c)),
    ];
    (
        prop_oneof![3 => "[a-z-]{1,12}".prop_map(Value::String), 1 => hostile_string().prop_map(Value::String)],
        data,
        one_of_channels,
        prop::option::of(prop_oneof![
            3 => (any::<u32>(), any::<u64>()).prop_map(|(a, b)| json!(format!("{a}.{b}"))),
            1 => socket_id_like().prop_map(Value::String),
            1 => json_value(),
        ]),
        prop::option::of(prop::sample::select(vec!["subscription_count", "user_count", "subscription_count,user_count", ""]).prop_map(|s| json!(s))),
        prop::option::of(prop_oneof![
            3 => btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..5).prop_map(|m| json!(m)),
            1 => tags_value(),
            1 => json_value(),
        ]),
        prop::option::of(prop::sample::select(vec!["low", "normal", "high", "high", "urgent"]).prop_map(|s| json!(s))),
        prop::option::of(prop_oneof![3 => any::<u32>().prop_map(|n| json!(n)), 1 => json_leaf()]),
        prop::option::of(prop_oneof![3 => "[a-z0-9]{1,8}".prop_map(Value::String), 1 => json_leaf()]),
    )
        .prop_map(|(name, data, (ck, cv), socket_id, info, tags, priority, ttl, key)| {
            let mut m = Map::new();
            m.insert("name".into(), name);
            m.insert("data".into(), data);
            m.insert(ck.into(), cv);
            for (k, v) in [("socket_id", socket_id), ("info", info), ("tags", tags), ("priority", priority), ("ttl", ttl), ("idempotency_key", key)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

fn hostile_trigger() -> impl Strategy<Value = Value> {
    (trigger_value(), overrides(TRIGGER_FIELDS)).prop_map(|(v, o)| apply_overrides(v, o))
}

const NOTIFICATION_FIELDS: &[&str] = &[
    "to",
    "notification_type",
    "from",
    "message",
    "action_url",
    "priority",
    "ttl",
    "idempotency_key",
];

fn notification_value() -> impl Strategy<Value = Value> {
    let user = prop_oneof![4 => "[a-z0-9]{1,10}", 1 => hostile_string()].prop_map(Value::String);
    (
        prop_oneof![4 => vec(user, 0..4).prop_map(Value::Array), 1 => json_value()],
        hostile_string(),
        prop::option::of(hostile_string()),
        prop_oneof![4 => "\\PC{0,40}".prop_map(Value::String), 1 => (9_000usize..11_000).prop_map(|n| Value::String("m".repeat(n)))],
        prop::option::of(hostile_string()),
        prop::option::of(prop::sample::select(vec!["low", "normal", "high", "high", "x"])),
        prop::option::of(prop_oneof![3 => (1u32..86_400).prop_map(|n| json!(n)), 1 => json_leaf()]),
        prop::option::of(prop_oneof![3 => "[a-z0-9]{1,8}".prop_map(Value::String), 1 => json_leaf()]),
    )
        .prop_map(|(to, ty, from, message, url, priority, ttl, key)| {
            let mut v = json!({"to": to, "notification_type": ty, "message": message});
            for (k, x) in [("from", from.map(Value::String)), ("action_url", url.map(Value::String)), ("priority", priority.map(|p| json!(p))), ("ttl", ttl), ("idempotency_key", key)] {
                if let Some(x) = x {
                    v[k] = x;
                }
            }
            v
        })
}

/// A request body: structured, structured then edited, or junk.
fn body(structured: BoxedStrategy<Value>) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => structured.clone().prop_map(|v| v.to_string()),
        2 => (structured, vec(edit(), 1..4)).prop_map(|(v, e)| mutate(&v.to_string(), &e)),
        1 => json_text(),
        1 => any::<String>(),
    ]
}

/// Runs `cases` signed POSTs of hostile bodies to `path`, checking each answer and that
/// the server still answers `/up`.
fn http_fuzz(
    rt: &tokio::runtime::Runtime,
    api: &support::Api,
    path: &str,
    bodies: impl Strategy<Value = String>,
) {
    let mut runner = TestRunner::new(config_with(env_cases(
        "FUZZ_HTTP_CASES",
        DEFAULT_HTTP_CASES,
    )));
    let result = runner.run(&bodies, |body| {
        rt.block_on(async {
            let q = api.signed_query("POST", path, &[], &body, support::now());
            let url = format!("{path}?{q}");
            let call = api.raw("POST", &url, &body);
            let (status, answer) = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .map_err(|_| TestCaseError::fail(format!("{path} hung on {body:?}")))?;
            prop_assert!(
                status < 500,
                "{} answered {} {} to {:?}",
                path,
                status,
                answer,
                body
            );
            if (200..300).contains(&status) {
                prop_assert!(
                    answer.is_object(),
                    "{} answered {} {} to {:?}",
                    path,
                    status,
                    answer,
                    body
                );
            } else {
                prop_assert!(
                    (400..500).contains(&status),
                    "{} answered {} to {:?}",
                    path,
                    status,
                    body
                );
                let msg = answer.get("error").and_then(Value::as_str);
                prop_assert!(
                    msg.is_some_and(|m| !m.is_empty()),
                    "{} answered {} {} to {:?}",
                    path,
                    status,
                    answer,
                    body
                );
            }
            let up = api.http.get(format!("{}/up", api.base)).send();
            let up = tokio::time::timeout(Duration::from_secs(10), up)
                .await
                .map_err(|_| TestCaseError::fail("/up hung"))?
                .map_err(|e| TestCaseError::fail(format!("/up failed: {e}")))?;
            prop_assert_eq!(up.status().as_u16(), 200);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{path}: {e}");
    }
}

/// `POST /apps/{id}/events`, `/batch_events` and `/bus/notifications` with hostile bodies,
/// signed correctly: always a 2xx, or a 4xx with a JSON `{"error": ...}`; never a 5xx or a
/// hang; `/up` keeps answering.
#[test]
fn http_api_bodies_never_fail_the_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(support::TestServer::start());
    let api = server.api();
    let app = &api.app_id;
    http_fuzz(
        &rt,
        &api,
        &format!("/apps/{app}/events"),
        body(hostile_trigger().boxed()),
    );
    // Batch items take one channel each: mostly such items, some hostile ones.
    let item = trigger_value().prop_map(|mut t| {
        if let Some(Value::Array(cs)) = t.as_object_mut().and_then(|m| m.remove("channels")) {
            t["channel"] = cs.into_iter().next().unwrap_or(Value::Null);
        }
        t
    });
    let items = prop_oneof![
        2 => vec(item, 1..4),
        1 => vec(hostile_trigger(), 0..12),
    ];
    let batch =
        (items, overrides(&["batch"])).prop_map(|(b, o)| apply_overrides(json!({ "batch": b }), o));
    http_fuzz(
        &rt,
        &api,
        &format!("/apps/{app}/batch_events"),
        body(batch.boxed()),
    );
    let notification = (notification_value(), overrides(NOTIFICATION_FIELDS))
        .prop_map(|(v, o)| apply_overrides(v, o));
    http_fuzz(
        &rt,
        &api,
        &format!("/apps/{app}/bus/notifications"),
        body(notification.boxed()),
    );
    rt.block_on(server.stop());
}
