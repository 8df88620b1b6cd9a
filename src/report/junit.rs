//! JUnit XML for CI: one test case per step × check (lint, merge-check, compare vs reference,
//! compare vs parent); a failing check is a `<failure>` with the cause in its message.

use super::escape;
use crate::checks::{Finding, Severity};
use crate::pipeline::run::{evidence, PipelineReport};
use crate::verdict::Verdict;

pub struct Junit;

/// Error findings, a summary counted as the findings it stands for.
fn error_count(findings: &[Finding]) -> u64 {
    findings.iter().filter(|f| f.severity == Severity::Error).map(Finding::weight).sum()
}

struct Case {
    class: String,
    name: &'static str,
    failure: Option<(String, String)>,
    error: Option<String>,
}

impl Junit {
    pub fn render(&self, r: &PipelineReport) -> String {
        let mut cases = Vec::new();
        for s in &r.steps {
            let class = format!("{}.{}", r.name, s.label);
            let errors: Vec<String> = s
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{} {} [{}]: {}", f.id, f.file, f.field.clone().unwrap_or_default(), f.message))
                .collect();
            cases.push(Case {
                class: class.clone(),
                name: "lint",
                failure: (!errors.is_empty()).then(|| (format!("{} lint error(s)", error_count(&s.findings)), errors.join("\n"))),
                error: None,
            });
            if let Some(m) = &s.merge {
                let errors: Vec<String> =
                    m.findings.iter().filter(|f| f.severity == Severity::Error).map(|f| format!("{}: {}", f.id, f.message)).collect();
                cases.push(Case {
                    class: class.clone(),
                    name: "merge-check",
                    failure: (!errors.is_empty()).then(|| (format!("{} merge error(s)", error_count(&m.findings)), errors.join("\n"))),
                    error: None,
                });
            }
            for (name, c) in [("compare-vs-reference", &s.vs_reference), ("compare-vs-parent", &s.vs_parent)] {
                if let Some(c) = c {
                    cases.push(Case {
                        class: class.clone(),
                        name,
                        failure: (c.verdict == Verdict::Fail)
                            .then(|| (evidence(c), format!("KL mean {:.4}, top-1 {:.1}%", c.summary.kl.mean, 100.0 * c.summary.top1))),
                        error: None,
                    });
                }
            }
            if let Some(e) = &s.error {
                cases.push(Case { class, name: "run", failure: None, error: Some(e.clone()) });
            }
        }
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        let errors = cases.iter().filter(|c| c.error.is_some()).count();
        let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        o.push_str(&format!(
            "<testsuites name=\"ckptcheck\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">\n",
            cases.len(),
            escape(&r.name),
            cases.len()
        ));
        for c in &cases {
            o.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\"", escape(&c.class), c.name));
            match (&c.failure, &c.error) {
                (Some((msg, body)), _) => {
                    o.push_str(&format!(">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n", escape(msg), escape(body)))
                }
                (None, Some(e)) => o.push_str(&format!(">\n      <error message=\"{}\"/>\n    </testcase>\n", escape(e))),
                (None, None) => o.push_str("/>\n"),
            }
        }
        o.push_str("  </testsuite>\n</testsuites>\n");
        o
    }
}
