//! The decision body (allow and acquire answers) as JSON, written field by
//! field into a buffer of its exact length, which becomes the `Bytes` of
//! the answer without a copy: the same text as `serde_json` writes for
//! [`DecisionBody`] (a proptest holds them equal), without serde's
//! per-field machinery on the hottest answer of the server.

use bytes::Bytes;

use crate::model::DecisionBody;

/// `body` as JSON, in one allocation of its exact size (`Bytes` takes a
/// full `Vec` as it is; one with room to spare costs a second allocation).
pub fn decision_json(b: &DecisionBody) -> Bytes {
    let numbers = [
        b.queue_position,
        b.estimated_wait_ms,
        b.remaining,
        b.retry_after_ms,
        b.reset_after_ms,
    ];
    let id = b.request_id.as_bytes();
    let id_len = id.iter().map(|&c| escaped_len(c)).sum::<usize>();
    let len = NAMES_LEN - usize::from(b.allowed)
        + if b.degraded { DEGRADED.len() } else { 0 }
        + numbers.iter().map(|&n| digits(n)).sum::<usize>()
        + id_len;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(if b.allowed {
        b"{\"allowed\":true"
    } else {
        b"{\"allowed\":false"
    });
    for (name, n) in NAMES.iter().zip(numbers) {
        out.extend_from_slice(name);
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    out.extend_from_slice(b",\"request_id\":\"");
    if id_len == id.len() {
        // Nothing to escape (any id this node makes).
        out.extend_from_slice(id);
    } else {
        escape(id, &mut out);
    }
    out.push(b'"');
    if b.degraded {
        out.extend_from_slice(DEGRADED);
    }
    out.push(b'}');
    debug_assert_eq!(out.len(), len);
    Bytes::from(out)
}

/// The numbers' field names, in `DecisionBody`'s order.
const NAMES: [&[u8]; 5] = [
    b",\"queue_position\":",
    b",\"estimated_wait_ms\":",
    b",\"remaining\":",
    b",\"retry_after_ms\":",
    b",\"reset_after_ms\":",
];

const DEGRADED: &[u8] = b",\"degraded\":true";

/// Everything but the numbers, the id and `degraded`, when not allowed.
const NAMES_LEN: usize = {
    let mut len = r#"{"allowed":false,"request_id":""}"#.len();
    let mut i = 0;
    while i < NAMES.len() {
        len += NAMES[i].len();
        i += 1;
    }
    len
};

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// How `serde_json` escapes a byte of a string: `"` and `\` by a
/// backslash, the five named controls by their letter, other controls as
/// `\u00XX` (lowercase hex); everything else (UTF-8 included) as is.
fn escape_of(c: u8) -> Option<u8> {
    match c {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        0x08 => Some(b'b'),
        0x0c => Some(b'f'),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        0x00..=0x1f => Some(b'u'),
        _ => None,
    }
}

fn escaped_len(c: u8) -> usize {
    match escape_of(c) {
        None => 1,
        Some(b'u') => 6,
        Some(_) => 2,
    }
}

fn escape(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let Some(short) = escape_of(c) else { continue };
        out.extend_from_slice(&s[start..i]);
        start = i + 1;
        if short == b'u' {
            let hex = [HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex[0], hex[1]]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(numbers: [u64; 5], allowed: bool, degraded: bool, id: String) -> DecisionBody {
        DecisionBody {
            allowed,
            queue_position: numbers[0],
            estimated_wait_ms: numbers[1],
            remaining: numbers[2],
            retry_after_ms: numbers[3],
            reset_after_ms: numbers[4],
            request_id: id.into(),
            degraded,
        }
    }

    #[test]
    fn the_buffer_is_exactly_the_text() {
        // Every kind of escape; `decision_json` asserts (in debug builds,
        // as tests run) that the text fills its buffer exactly.
        let b = body(
            [0, 9, 10, u64::MAX, 12345],
            false,
            true,
            "a\"\\\n\u{1}é".into(),
        );
        let json = decision_json(&b);
        assert_eq!(json, serde_json::to_vec(&b).unwrap());
        assert_eq!(NAMES_LEN, 121);
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(
            numbers in prop::array::uniform5(prop_oneof![0..1000u64, any::<u64>()]),
            allowed: bool,
            degraded: bool,
            // Any text: controls, quotes, backslashes, non-ASCII.
            id in prop_oneof![
                "[ -~]{0,128}",
                "[\\x00-\\x1f\"\\\\a\u{7f}é€😀]{0,40}",
                any::<String>(),
            ],
        ) {
            let b = body(numbers, allowed, degraded, id);
            // In debug builds `decision_json` also checks its length.
            prop_assert_eq!(decision_json(&b), serde_json::to_vec(&b).unwrap());
        }
    }
}
