//! JSON helpers for checks that `serde_json::Value` cannot make, such as the order of an object's fields.

/// The keys of every JSON object in `text`, one list per object in the order the objects open, each list in
/// the order the keys appear. Returns `None` when `text` is not well-nested JSON-looking text.
///
/// This is a small scanner, not a validator: parse the text with `serde_json` too.
pub fn object_keys(text: &str) -> Option<Vec<Vec<String>>> {
    #[derive(PartialEq)]
    enum Frame {
        /// An object, with its index in the result and whether a key is expected next.
        Object {
            index: usize,
            expect_key: bool,
        },
        Array,
    }
    let mut result: Vec<Vec<String>> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                result.push(Vec::new());
                stack.push(Frame::Object { index: result.len() - 1, expect_key: true });
            }
            '[' => stack.push(Frame::Array),
            '}' | ']' => {
                let matched = matches!((c, stack.pop()), ('}', Some(Frame::Object { .. })) | (']', Some(Frame::Array)));
                if !matched {
                    return None;
                }
            }
            ',' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            s.push('\\');
                            s.push(chars.next()?);
                        }
                        other => s.push(other),
                    }
                }
                if let Some(Frame::Object { index, expect_key }) = stack.last_mut() {
                    if *expect_key {
                        result[*index].push(s);
                        *expect_key = false;
                    }
                }
            }
            _ => {}
        }
    }
    if stack.is_empty() {
        Some(result)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::object_keys;

    #[test]
    fn keys_in_order() {
        let keys = object_keys(r#"[{"host": "a", "master": true, "lsn": "0/1"}, {"b": {"c": 1}, "d": "x,\"y"}]"#);
        assert_eq!(
            keys,
            Some(vec![
                vec!["host".to_owned(), "master".to_owned(), "lsn".to_owned()],
                vec!["b".to_owned(), "d".to_owned()],
                vec!["c".to_owned()],
            ])
        );
        assert_eq!(object_keys("{"), None);
    }
}
