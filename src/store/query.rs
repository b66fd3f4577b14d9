//! Search queries: one small syntax for both stores, checked here so that a malformed query is a
//! clear error on SQLite and PostgreSQL alike (and never reaches either as raw syntax).
//!
//! `word` must appear, `"several words"` must appear together, `pre*` matches prefixes, `-word`
//! must not appear, and `OR` between two terms makes either enough.

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid search query: {0}")]
pub struct QueryError(pub String);

/// One positive term or an exclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Words that must appear in this order.
    Phrase(Vec<String>),
    /// A word prefix.
    Prefix(String),
}

/// A parsed query: groups joined by AND, each group an OR of terms; plus excluded terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// AND of ORs.
    pub groups: Vec<Vec<Term>>,
    /// Terms that must not appear.
    pub excluded: Vec<Term>,
}

/// Longest query accepted, in characters.
pub const MAX_QUERY_LEN: usize = 256;

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// Parses a query.
pub fn parse(input: &str) -> Result<Query, QueryError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(QueryError("the query is empty".into()));
    }
    if input.chars().count() > MAX_QUERY_LEN {
        return Err(QueryError(format!("the query is longer than {MAX_QUERY_LEN} characters")));
    }
    if input.chars().filter(|c| *c == '"').count() % 2 == 1 {
        return Err(QueryError("a quotation mark is not closed".into()));
    }
    // Tokens: quoted phrases, OR, and bare words (with an optional leading '-').
    let mut tokens: Vec<(bool, Term, bool)> = Vec::new(); // (negated, term, is_or_marker)
    let mut rest = input;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let negated = c == '-';
        let body = if negated { &rest[1..] } else { rest };
        if let Some(after) = body.strip_prefix('"') {
            let close = after.find('"').ok_or_else(|| QueryError("a quotation mark is not closed".into()))?;
            let phrase = words(&after[..close]);
            if phrase.is_empty() {
                return Err(QueryError("a quoted phrase holds no words".into()));
            }
            tokens.push((negated, Term::Phrase(phrase), false));
            rest = &after[close + 1..];
            continue;
        }
        let end = body.find(char::is_whitespace).unwrap_or(body.len());
        let word = &body[..end];
        rest = &body[end..];
        if word == "OR" && !negated {
            tokens.push((false, Term::Phrase(Vec::new()), true));
            continue;
        }
        let prefix = word.ends_with('*');
        let parts = words(word.trim_end_matches('*'));
        match (parts.len(), prefix) {
            (0, _) => {
                if negated {
                    return Err(QueryError("'-' must be followed by a word".into()));
                }
            }
            (1, true) => tokens.push((negated, Term::Prefix(parts[0].clone()), false)),
            (_, _) => tokens.push((negated, Term::Phrase(parts), false)),
        }
    }
    let mut groups: Vec<Vec<Term>> = Vec::new();
    let mut excluded = Vec::new();
    let mut join_next = false;
    for (negated, term, is_or) in tokens {
        if is_or {
            if groups.is_empty() || join_next {
                return Err(QueryError("OR must stand between two terms".into()));
            }
            join_next = true;
            continue;
        }
        if negated {
            if join_next {
                return Err(QueryError("OR cannot join an excluded term".into()));
            }
            excluded.push(term);
        } else if join_next {
            if let Some(last) = groups.last_mut() {
                last.push(term);
            }
            join_next = false;
        } else {
            groups.push(vec![term]);
        }
    }
    if join_next {
        return Err(QueryError("OR must stand between two terms".into()));
    }
    if groups.is_empty() {
        return Err(QueryError("the query needs at least one word to look for".into()));
    }
    if groups.iter().map(Vec::len).sum::<usize>() + excluded.len() > 32 {
        return Err(QueryError("the query has more than 32 terms".into()));
    }
    Ok(Query { groups, excluded })
}

impl Query {
    /// The SQLite FTS5 `MATCH` expression.
    pub fn to_fts5(&self) -> String {
        let term = |t: &Term| match t {
            Term::Phrase(words) => format!("\"{}\"", words.join(" ")),
            Term::Prefix(word) => format!("\"{word}\"*"),
        };
        let positive = self
            .groups
            .iter()
            .map(|g| format!("({})", g.iter().map(term).collect::<Vec<_>>().join(" OR ")))
            .collect::<Vec<_>>();
        let mut expr = positive.join(" AND ");
        for t in &self.excluded {
            expr = format!("{expr} NOT {}", term(t));
        }
        expr
    }

    /// The PostgreSQL `to_tsquery('simple', …)` expression.
    pub fn to_tsquery(&self) -> String {
        let term = |t: &Term| match t {
            Term::Phrase(words) => format!("({})", words.join(" <-> ")),
            Term::Prefix(word) => format!("{word}:*"),
        };
        let mut parts: Vec<String> =
            self.groups.iter().map(|g| format!("({})", g.iter().map(term).collect::<Vec<_>>().join(" | "))).collect();
        parts.extend(self.excluded.iter().map(|t| format!("!{}", term(t))));
        parts.join(" & ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_to_both_dialects() {
        let q = parse(r#"order "ships today" -cancelled stat*"#).unwrap();
        assert_eq!(q.to_fts5(), r#"("order") AND ("ships today") AND ("stat"*) NOT "cancelled""#);
        assert_eq!(q.to_tsquery(), "((order)) & ((ships <-> today)) & (stat:*) & !(cancelled)");
        let or = parse("invoice OR receipt").unwrap();
        assert_eq!(or.to_fts5(), r#"("invoice" OR "receipt")"#);
    }

    #[test]
    fn punctuation_never_reaches_the_database() {
        let q = parse("status: shipped; DROP TABLE messages").unwrap();
        let fts = q.to_fts5();
        assert!(!fts.contains(';') && !fts.contains(':'), "{fts}");
        assert!(!q.to_tsquery().contains(';'));
    }

    #[test]
    fn malformed_queries_are_refused() {
        for bad in ["", "   ", "\"open", "OR word", "word OR", "-only", "a OR -b", "\"\"", "-"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse(&"a ".repeat(200)).is_err());
    }
}
