//! Phone numbers in logs: above debug level, identities are shown with all
//! but the last four digits of their user part masked.

use std::fmt;

/// Displays a From/To value or number with its user part masked unless
/// debug logging is enabled.
pub(crate) struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if tracing::enabled!(tracing::Level::DEBUG) {
            return f.write_str(self.0);
        }
        f.write_str(&mask(self.0))
    }
}

/// Masks the digits of the display name and of the user part (between
/// `sip:`/`tel:` and `@`), each keeping its last four; a value without a URI
/// is masked whole the same way. Hosts are left alone.
fn mask(value: &str) -> String {
    let uri = ["sips:", "sip:", "tel:"]
        .iter()
        .filter_map(|scheme| value.find(scheme).map(|i| i + scheme.len()))
        .min();
    let Some(start) = uri else {
        return mask_digits(value);
    };
    let end = value[start..]
        .find(['@', ';', '>'])
        .map(|j| start + j)
        .unwrap_or(value.len());
    format!(
        "{}{}{}",
        mask_digits(&value[..start]),
        mask_digits(&value[start..end]),
        &value[end..]
    )
}

fn mask_digits(s: &str) -> String {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if digits - seen >= 4 { '*' } else { c }
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_all_but_last_four_digits_of_the_user() {
        assert_eq!(
            mask("\"Bob\" <sip:+14155550123@10.0.0.1:5060>;tag=1"),
            "\"Bob\" <sip:+*******0123@10.0.0.1:5060>;tag=1"
        );
        assert_eq!(mask("tel:+442071234567"), "tel:+********4567");
        assert_eq!(mask("<sip:alice@example.com>"), "<sip:alice@example.com>");
        assert_eq!(mask("123"), "123");
        assert_eq!(
            mask("\"+1 415 555 0123\" <sip:14155550123@h>"),
            "\"+* *** *** 0123\" <sip:*******0123@h>"
        );
    }
}
