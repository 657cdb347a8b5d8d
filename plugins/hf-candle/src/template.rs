//! Chat templates: the model's own Jinja template rendered with `minijinja`, set up to behave
//! like transformers' `apply_chat_template` (trim/lstrip blocks, Python string methods,
//! `raise_exception`, `strftime_now`, and a `tojson` that writes what Python's `json.dumps` writes).

pub mod named;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

/// The most template instructions one render may run: a real chat template renders a long
/// conversation in well under a million; a hostile one (nested `range(100000)` loops) is stopped
/// with an error instead of spinning.
const TEMPLATE_FUEL: u64 = 20_000_000;

/// The longest rendered prompt, bytes (far beyond any context window; a template that writes
/// more is refused before tokenization).
const MAX_RENDERED_BYTES: usize = 256 << 20;

/// The widest `tojson(indent=...)` accepted (Python takes any; a huge one only allocates).
const MAX_JSON_INDENT: i64 = 64;

/// ChatML, used when a model ships no template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template writes `<think>` (a reasoning model's format).
    thinks: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

/// What a template is rendered with.
pub struct RenderInput<'a> {
    /// Messages as JSON objects (`role`, `content`, `tool_calls`...).
    pub messages: &'a [Json],
    /// Tool definitions.
    pub tools: Option<&'a [Json]>,
    /// Append the assistant turn opener.
    pub add_generation_prompt: bool,
    /// BOS text.
    pub bos_token: Option<&'a str>,
    /// EOS text.
    pub eos_token: Option<&'a str>,
    /// Extra variables (`enable_thinking`...).
    pub kwargs: &'a Map<String, Json>,
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat_template", source.to_owned())
            .map_err(|e| Error::Template(format!("the chat template does not compile: {e:#}")))?;
        Ok(Self {
            env,
            thinks: source.contains("<think>"),
        })
    }

    /// Whether the model reasons in `<think>` tags (its template writes them).
    pub fn thinks(&self) -> bool {
        self.thinks
    }

    /// Renders the template.
    pub fn render(&self, input: &RenderInput<'_>) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat_template")
            .map_err(|e| Error::Template(e.to_string()))?;
        let mut ctx = Map::new();
        for (k, v) in input.kwargs {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), Json::Array(input.messages.to_vec()));
        ctx.insert(
            "tools".into(),
            input.tools.map_or(Json::Null, |t| Json::Array(t.to_vec())),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(input.add_generation_prompt),
        );
        ctx.insert(
            "bos_token".into(),
            input
                .bos_token
                .map_or(Json::Null, |s| Json::String(s.into())),
        );
        ctx.insert(
            "eos_token".into(),
            input
                .eos_token
                .map_or(Json::Null, |s| Json::String(s.into())),
        );
        let mut out = CappedString::default();
        let rendered = tmpl.render_captured_to(Value::from_serialize(&ctx), &mut out);
        if out.overflow {
            return Err(Error::InvalidRequest(format!(
                "the chat template rendered more than {MAX_RENDERED_BYTES} bytes; shorten the conversation"
            )));
        }
        rendered.map(|_| out.text).map_err(|e| {
            if e.kind() == ErrorKind::OutOfFuel {
                Error::Template(format!(
                    "the chat template ran more than {TEMPLATE_FUEL} instructions and was stopped; fix its loops or set another template"
                ))
            } else if e.kind() == ErrorKind::InvalidOperation {
                // raise_exception(...) from the template: the conversation is not acceptable.
                Error::InvalidRequest(format!(
                    "the chat template rejected the conversation: {}",
                    e.detail().unwrap_or("(no message)")
                ))
            } else {
                Error::Template(format!("{e:#}"))
            }
        })
    }
}

/// The rendered prompt, refusing to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct CappedString {
    text: String,
    overflow: bool,
}

impl std::io::Write for CappedString {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflow = true;
            return Err(std::io::Error::other("rendered prompt too long"));
        }
        // minijinja writes whole UTF-8 strings.
        self.text.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`; no HTML escaping.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let json: Json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) if n > MAX_JSON_INDENT => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: indent {n} is larger than {MAX_JSON_INDENT}"),
                ));
            }
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().unwrap_or("").to_owned()),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let a = s.get_item(&Value::from(0))?;
            let b = s.get_item(&Value::from(1))?;
            (
                a.as_str().unwrap_or(",").to_owned(),
                b.as_str().unwrap_or(":").to_owned(),
            )
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let mut out = String::new();
    let fmt = PyJson {
        indent: indent.as_deref(),
        item_sep: &item_sep,
        key_sep: &key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    fmt.write(&json, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// Python `json.dumps` formatting.
struct PyJson<'a> {
    indent: Option<&'a str>,
    item_sep: &'a str,
    key_sep: &'a str,
    sort_keys: bool,
}

impl PyJson<'_> {
    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(ind) = self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, v: &Json, depth: usize, out: &mut String) {
        match v {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(&py_number(n)),
            Json::String(s) => write_py_string(s, out),
            Json::Array(a) if a.is_empty() => out.push_str("[]"),
            Json::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write(x, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            Json::Object(m) if m.is_empty() => out.push_str("{}"),
            Json::Object(m) => {
                let mut entries: Vec<(&String, &Json)> = m.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    write_py_string(k, out);
                    out.push_str(self.key_sep);
                    self.write(x, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }
}

fn write_py_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python's `repr` writes it (`1.0`, `1e-05`, `1e+16`).
fn py_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Shortest round-trip digits, then Python's layout rule: scientific when exp < -4 or >= 16.
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

/// `strftime_now(format)`: the current UTC time, formatted with the common `strftime` codes.
fn strftime_now(fmt: &str) -> std::result::Result<Value, minijinja::Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(Value::from(format_time(secs, fmt)))
}

/// Formats a Unix time (UTC) with `%Y %y %m %d %e %B %b %A %a %H %I %M %S %p %j %%`.
pub fn format_time(secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let d = doy_mar - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let wday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let (hh, mm, ss) = (tod / 3600, tod % 3600 / 60, tod % 60);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", if hh % 12 == 0 { 12 } else { hh % 12 })),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_templates_are_stopped_not_obeyed() {
        let messages = [serde_json::json!({"role": "user", "content": "hi"})];
        let kwargs = Map::new();
        let input = RenderInput {
            messages: &messages,
            tools: None,
            add_generation_prompt: true,
            bos_token: None,
            eos_token: None,
            kwargs: &kwargs,
        };
        let started = std::time::Instant::now();
        let spin = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        let e = spin.render(&input).unwrap_err().to_string();
        assert!(e.contains("instructions"), "{e}");
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
        let wide = ChatTemplate::new("{{ messages | tojson(indent=1000000000000) }}").unwrap();
        let e = wide.render(&input).unwrap_err().to_string();
        assert!(e.contains("indent"), "{e}");
        let huge =
            ChatTemplate::new("{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}").unwrap();
        let e = huge.render(&input).unwrap_err().to_string();
        assert!(e.contains("bytes"), "{e}");
    }

    use super::*;

    #[test]
    fn dates() {
        // 2024-07-26 12:34:56 UTC, a Friday.
        assert_eq!(
            format_time(1_721_997_296, "%d %b %Y %A %H:%M:%S %j"),
            "26 Jul 2024 Friday 12:34:56 208"
        );
        assert_eq!(format_time(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
    }

    #[test]
    fn python_json() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}").unwrap();
        let x = serde_json::json!({"b": [1, 2.0, 1e-5, "é<&>'\n"], "a": {}});
        let msgs: Vec<Json> = vec![];
        let mut kw = Map::new();
        kw.insert("x".into(), x);
        let out = t
            .render(&RenderInput {
                messages: &msgs,
                tools: None,
                add_generation_prompt: false,
                bos_token: None,
                eos_token: None,
                kwargs: &kw,
            })
            .unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.0, 1e-05, \"é<&>'\\n\"], \"a\": {}}|{\n  \"b\": [\n    1,\n    2.0,\n    1e-05,\n    \"é<&>'\\n\"\n  ],\n  \"a\": {}\n}"
        );
    }

    #[test]
    fn raise_exception_is_an_invalid_request() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}").unwrap();
        let err = t
            .render(&RenderInput {
                messages: &[],
                tools: None,
                add_generation_prompt: false,
                bos_token: None,
                eos_token: None,
                kwargs: &Map::new(),
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest(ref m) if m.contains("roles must alternate")),
            "{err}"
        );
    }
}
