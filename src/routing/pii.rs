//! Structured personal identifiers in prompt text: email addresses, phone numbers, payment card
//! numbers (Luhn checksum and issuer prefix), US Social Security numbers, UK National Insurance
//! numbers and IBANs (ISO 13616 mod-97 checksum). A hit raises the request's
//! `data_classification` to `restricted`, which keeps it on the edge.
//!
//! Patterns find candidates; checksums and number-plan rules then reject look-alikes (order
//! numbers, dates, invoice ids), so precision stays high without giving up recall on real
//! identifiers. Regexes are compiled once, at startup. Matched text is never logged or
//! returned: reports carry kinds and counts only.

use std::fmt;

use regex::Regex;

use super::error::PolicyError;

/// A kind of structured identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PiiKind {
    Email,
    Phone,
    PaymentCard,
    UsSsn,
    UkNino,
    Iban,
}

impl PiiKind {
    /// Every kind, in report order.
    pub const ALL: [PiiKind; 6] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::PaymentCard,
        PiiKind::UsSsn,
        PiiKind::UkNino,
        PiiKind::Iban,
    ];

    /// The spelling used in explain output and the evaluation set.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::PaymentCard => "payment_card",
            PiiKind::UsSsn => "us_ssn",
            PiiKind::UkNino => "uk_nino",
            PiiKind::Iban => "iban",
        }
    }

    /// Parses [`PiiKind::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds found in a text and how many of each (never the text itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiiFindings {
    pub counts: Vec<(PiiKind, usize)>,
}

impl PiiFindings {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// True when `kind` was found.
    pub fn contains(&self, kind: PiiKind) -> bool {
        self.counts.iter().any(|(k, _)| *k == kind)
    }

    fn add(&mut self, kind: PiiKind) {
        match self.counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((kind, 1)),
        }
    }
}

/// The compiled detectors; build once with [`PiiDetector::new`].
#[derive(Debug)]
pub struct PiiDetector {
    email: Regex,
    phone_international: Regex,
    phone_nanp: Regex,
    phone_uk: Regex,
    card: Regex,
    ssn: Regex,
    nino: Regex,
    iban: Regex,
    name: Regex,
}

impl PiiDetector {
    /// Compiles the patterns.
    pub fn new() -> Result<Self, PolicyError> {
        let re = |p: &str| Regex::new(p).map_err(|e| PolicyError::Scorers(e.to_string()));
        Ok(Self {
            email: re(
                r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}\b",
            )?,
            // +CC or 00CC, then groups of digits with spaces, dots, dashes or parentheses.
            phone_international: re(r"(?:\+|\b00)[1-9][0-9]{0,3}(?:[ .-]?\(?[0-9]{1,5}\)?){2,6}")?,
            // North American: (415) 555-0132, 415-555-0132, 415.555.0132.
            phone_nanp: re(
                r"(?:\(\b[2-9][0-9]{2}\)\s?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}\b",
            )?,
            // UK national: 020 7946 0958, 07700 900123, 0161 496 0000.
            phone_uk: re(r"\b0[1-9][0-9]{1,3}[ -]?[0-9]{3,4}[ -]?[0-9]{3,4}\b")?,
            // 13-19 digits, optionally grouped by single spaces or dashes.
            card: re(r"\b[0-9](?:[ -]?[0-9]){12,18}\b")?,
            ssn: re(r"\b([0-9]{3})[- ]([0-9]{2})[- ]([0-9]{4})\b")?,
            nino: re(
                r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b",
            )?,
            iban: re(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")?,
            // A title before a capitalised word, or two capitalised words (first and last name,
            // with hyphens and apostrophes: Al-Sayed, O'Brien).
            name: re(
                r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+\p{Lu}\p{Ll}+|\b\p{Lu}\p{Ll}+(?:[-']\p{Lu}?\p{Ll}+)?\s+(?:\p{Lu}\p{Ll}?[-'])?\p{Lu}\p{Ll}+(?:[-']\p{Lu}\p{Ll}+)?\b",
            )?,
        })
    }

    /// True when some text appears to name a person: a title before a name, or two capitalised
    /// words in a row. Deliberately loose — it only gates the semantic personal-data score, so
    /// a topic that merely resembles personal data (a generic medical question) is not raised.
    pub fn names_someone(&self, texts: &[&str]) -> bool {
        texts.iter().any(|t| self.name.is_match(t))
    }

    /// Scans `texts` for structured identifiers.
    pub fn scan(&self, texts: &[&str]) -> PiiFindings {
        let mut found = PiiFindings::default();
        for text in texts {
            self.scan_one(text, &mut found);
        }
        found.counts.sort();
        found
    }

    fn scan_one(&self, text: &str, found: &mut PiiFindings) {
        for _ in self.email.find_iter(text) {
            found.add(PiiKind::Email);
        }
        // Card numbers and IBANs first; their spans are not counted again as phone numbers.
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for m in self.card.find_iter(text) {
            if is_payment_card(m.as_str()) {
                found.add(PiiKind::PaymentCard);
                taken.push((m.start(), m.end()));
            }
        }
        for m in self.iban.find_iter(text) {
            if is_iban(m.as_str()) {
                found.add(PiiKind::Iban);
                taken.push((m.start(), m.end()));
            }
        }
        for c in self.ssn.captures_iter(text) {
            let (Some(area), Some(group), Some(serial)) = (c.get(1), c.get(2), c.get(3)) else {
                continue;
            };
            if is_ssn(area.as_str(), group.as_str(), serial.as_str()) {
                found.add(PiiKind::UsSsn);
                if let Some(m) = c.get(0) {
                    taken.push((m.start(), m.end()));
                }
            }
        }
        for c in self.nino.captures_iter(text) {
            if c.get(1)
                .is_some_and(|p| !NINO_BAD_PREFIXES.contains(&p.as_str()))
            {
                found.add(PiiKind::UkNino);
            }
        }
        let overlaps = |s: usize, e: usize| taken.iter().any(|&(ts, te)| s < te && ts < e);
        let mut phones: Vec<(usize, usize)> = Vec::new();
        for re in [&self.phone_international, &self.phone_nanp, &self.phone_uk] {
            for m in re.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                if overlaps(s, e) || phones.iter().any(|&(ps, pe)| s < pe && ps < e) {
                    continue;
                }
                let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
                if (8..=15).contains(&digits) {
                    phones.push((s, e));
                    found.add(PiiKind::Phone);
                }
            }
        }
    }
}

/// Prefixes HMRC never issues.
const NINO_BAD_PREFIXES: &[&str] = &["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];

fn digits_of(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Luhn checksum over a digit string.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// A card number: Luhn-valid, with the length and issuer prefix of a real scheme (Visa,
/// Mastercard, American Express, Discover, JCB, Diners Club, UnionPay, Maestro).
fn is_payment_card(candidate: &str) -> bool {
    let d = digits_of(candidate);
    let len = d.len();
    if !(13..=19).contains(&len) || !luhn_valid(&d) {
        return false;
    }
    let prefix = |n: usize| {
        d.iter()
            .take(n)
            .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match len {
        13 => p1 == 4,
        14 => (300..=305).contains(&p3) || p2 == 36 || p2 == 38,
        15 => p2 == 34 || p2 == 37,
        16 => {
            p1 == 4
                || (51..=55).contains(&p2)
                || (2221..=2720).contains(&p4)
                || p4 == 6011
                || p2 == 65
                || (644..=649).contains(&p3)
                || (3528..=3589).contains(&p4)
                || p2 == 62
                || matches!(p4, 5018 | 5020 | 5038 | 6304 | 6759 | 6761 | 6763)
        }
        _ => {
            p1 == 4
                || p2 == 62
                || p4 == 6011
                || p2 == 65
                || matches!(p4, 5018 | 5020 | 5038 | 6304 | 6759 | 6761 | 6763)
        }
    }
}

/// US SSN number-plan rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn is_ssn(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Length per country for the countries whose IBANs a site is likely to see; other countries
/// only need a plausible length (15–34) and a valid checksum.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AT", 20),
    ("BE", 16),
    ("CH", 21),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("IE", 22),
    ("IT", 27),
    ("LU", 20),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("SE", 24),
];

/// An IBAN: known length for its country and ISO 13616 mod-97 remainder 1.
fn is_iban(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate.bytes().filter(|b| *b != b' ').collect();
    let len = compact.len();
    let Some(country) = std::str::from_utf8(compact.get(..2).unwrap_or_default()).ok() else {
        return false;
    };
    match IBAN_LENGTHS.iter().find(|(c, _)| *c == country) {
        Some(&(_, expected)) if expected != len => return false,
        None if !(15..=34).contains(&len) => return false,
        _ => {}
    }
    // Move the first four characters to the end, letters to 10..35, then mod 97 piecewise.
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<PiiKind> {
        PiiDetector::new()
            .expect("regexes")
            .scan(&[text])
            .counts
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn finds_each_kind_of_identifier() {
        assert_eq!(kinds("mail jane.doe@example.org now"), vec![PiiKind::Email]);
        assert_eq!(kinds("call +44 20 7946 0958"), vec![PiiKind::Phone]);
        assert_eq!(kinds("call (415) 555-0132"), vec![PiiKind::Phone]);
        assert_eq!(kinds("call 020 7946 0958"), vec![PiiKind::Phone]);
        assert_eq!(
            kinds("card 4111 1111 1111 1111"),
            vec![PiiKind::PaymentCard]
        );
        assert_eq!(kinds("amex 378282246310005"), vec![PiiKind::PaymentCard]);
        assert_eq!(kinds("ssn 123-45-6789"), vec![PiiKind::UsSsn]);
        assert_eq!(kinds("NI number AB 12 34 56 C"), vec![PiiKind::UkNino]);
        assert_eq!(
            kinds("IBAN GB82 WEST 1234 5698 7654 32"),
            vec![PiiKind::Iban]
        );
        assert_eq!(kinds("IBAN DE89370400440532013000"), vec![PiiKind::Iban]);
    }

    #[test]
    fn checksums_and_number_plans_reject_look_alikes() {
        // Luhn fails.
        assert!(kinds("order 4111 1111 1111 1112").is_empty());
        // Luhn passes but no card scheme starts with 9.
        assert!(kinds("ref 9999999999999995").is_empty());
        // SSN area 000 / 666 / 9xx never issued.
        assert!(kinds("000-12-3456 666-12-3456 900-12-3456").is_empty());
        // IBAN with a wrong check digit.
        assert!(kinds("GB82 WEST 1234 5698 7654 33").is_empty());
        // NINO prefix never issued.
        assert!(kinds("GB 12 34 56 A").is_empty());
        // Dates, invoice numbers, versions, short numbers.
        assert!(kinds("on 2024-01-15, invoice INV-2024-0042, v1.2.3, line 3, 42 pumps").is_empty());
    }

    #[test]
    fn name_cue_needs_a_title_or_two_capitalised_words() {
        let d = PiiDetector::new().expect("regexes");
        assert!(d.names_someone(&["Patient Helen Clarke has a fever"]));
        assert!(d.names_someone(&["ask Dr. Meier"]));
        assert!(d.names_someone(&["Kevin O'Brien and Fatima Al-Sayed"]));
        assert!(!d.names_someone(&["How much insulin for a 40 kg child?"]));
        assert!(!d.names_someone(&["The patient should rest. Call me later."]));
    }

    #[test]
    fn luhn_matches_known_values() {
        assert!(luhn_valid(&digits_of("79927398713")));
        assert!(!luhn_valid(&digits_of("79927398710")));
    }

    #[test]
    fn counts_repeat_findings() {
        let f = PiiDetector::new()
            .expect("regexes")
            .scan(&["a@b.io and c@d.io", "e@f.io"]);
        assert_eq!(f.counts, vec![(PiiKind::Email, 3)]);
        assert!(f.contains(PiiKind::Email));
    }
}
