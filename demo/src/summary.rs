//! What the demo prints every few seconds, read from the agent's own exposition (what a scrape of
//! /metrics returns), so the summary shows the exported contract and nothing internal.
use agent::attribution::labels::Workload;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The samples of an exposition in either text format (comment lines skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).filter_map(sample).collect()
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // key="value", with \\, \" and \n escaped in the value
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = inner[start..].find("=\"")? + start;
            let key = inner[start..eq].to_string();
            while chars.next_if(|&(i, _)| i <= eq + 1).is_some() {}
            let mut value = String::new();
            loop {
                match chars.next()? {
                    (_, '"') => break,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Sums the samples of `name` that carry `workload`'s labels and every pair of `labels`.
pub fn sum(samples: &[Sample], name: &str, workload: &Workload, labels: &[(&str, &str)]) -> f64 {
    let own = [
        ("namespace", workload.namespace.as_str()),
        ("pod", &workload.pod),
        ("container", &workload.container),
        ("workload", &workload.workload),
    ];
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| own.iter().chain(labels).all(|&(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_escapes_included() {
        let text = "# TYPE x counter\n\
                    x_total{namespace=\"\",pod=\"a\\\"b\",container=\"c\",workload=\"\",kind=\"k\"} 3\n\
                    x_total{namespace=\"\",pod=\"a\\\"b\",container=\"c\",workload=\"\",kind=\"j\"} 4\n\
                    x_total{namespace=\"\",pod=\"other\",container=\"c\",workload=\"\",kind=\"k\"} 5\n\
                    y 1.5\n# EOF\n";
        let s = samples(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[3], Sample { name: "y".into(), labels: vec![], value: 1.5 });
        let w = Workload { pod: "a\"b".into(), container: "c".into(), ..Default::default() };
        assert_eq!(sum(&s, "x_total", &w, &[]), 7.0);
        assert_eq!(sum(&s, "x_total", &w, &[("kind", "k")]), 3.0);
        assert_eq!(sum(&s, "x_total", &w, &[("kind", "z")]), 0.0);
    }
}
