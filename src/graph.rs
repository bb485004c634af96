//! The stage graph: stages as nodes, `needs` as edges (from the needed stage to the stage that
//! needs it), checked for unknown names, self-dependencies and cycles before anything runs.
//!
//! Reads a [`Manifest`]; pure. The runner asks it the order of the stages and what each
//! needs (a stage starts when its needs allow it); `poolparty graph` prints it.

use miette::LabeledSpan;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::error::{Error, Result, did_you_mean};
use crate::manifest::{JobSource, Manifest};

/// Stages and their dependencies.
#[derive(Debug, Clone)]
pub struct StageGraph {
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
}

impl StageGraph {
    /// Builds and checks the graph of a manifest's stages (indices into `manifest.stages`).
    ///
    /// # Errors
    /// `UnknownStage` with a did-you-mean, an `InvalidManifest` for a self-dependency, or
    /// `Cycle` naming every stage on it.
    pub fn build(manifest: &Manifest) -> Result<Self> {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..manifest.stages.len())
            .map(|i| graph.add_node(i))
            .collect();
        for (i, stage) in manifest.stages.iter().enumerate() {
            for need in &stage.needs {
                if need.stage == stage.name {
                    return Err(manifest.error(
                        need.span,
                        format!("stage `{}` needs itself", stage.name),
                        "self-dependency",
                        Some("remove it from `needs`".to_owned()),
                    ));
                }
                let Some(j) = manifest.stages.iter().position(|s| s.name == need.stage) else {
                    return Err(Error::UnknownStage {
                        stage: stage.name.to_string(),
                        unknown: need.stage.to_string(),
                        src: manifest.src.clone(),
                        span: need.span,
                        help: did_you_mean(need.stage.as_str(), manifest.stage_names()),
                    });
                };
                graph.add_edge(nodes[j], nodes[i], ());
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<String> = cycle
                .iter()
                .map(|&i| manifest.stages[i].name.to_string())
                .collect();
            let mut spans = Vec::new();
            for w in cycle.windows(2) {
                let (from, to) = (w[0], w[1]);
                // `to` needs `from`? edges go need → needer, so label `to`'s need on `from`.
                if let Some(n) = manifest.stages[to]
                    .needs
                    .iter()
                    .find(|n| n.stage == manifest.stages[from].name)
                {
                    spans.push(LabeledSpan::new_with_span(
                        Some(format!(
                            "`{}` needs `{}`",
                            manifest.stages[to].name, n.stage
                        )),
                        n.span,
                    ));
                }
            }
            return Err(Error::Cycle {
                cycle: names,
                src: manifest.src.clone(),
                spans,
            });
        }
        let order = petgraph::algo::toposort(&graph, None)
            .expect("cycles were ruled out above")
            .into_iter()
            .map(|n| graph[n])
            .collect();
        Ok(Self { graph, order })
    }

    /// Stage indices in an order where every stage comes after what it needs.
    #[must_use]
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The stages `stage` needs directly.
    #[must_use]
    pub fn needs(&self, stage: usize) -> Vec<usize> {
        self.graph
            .edges_directed(NodeIndex::new(stage), petgraph::Direction::Incoming)
            .map(|e| e.source().index())
            .collect()
    }

    /// Every stage `stage` depends on, directly or not.
    #[must_use]
    pub fn upstream(&self, stage: usize) -> Vec<usize> {
        let rev = petgraph::visit::Reversed(&self.graph);
        let mut out = Vec::new();
        let mut dfs = petgraph::visit::Dfs::new(rev, NodeIndex::new(stage));
        while let Some(n) = dfs.next(rev) {
            if n.index() != stage {
                out.push(n.index());
            }
        }
        out
    }

    /// The graph as Graphviz `dot`, `mermaid`, or indented text. `jobs[i]` is the job count
    /// of stage `i` when it is known.
    #[must_use]
    pub fn render(
        &self,
        manifest: &Manifest,
        jobs: &[Option<usize>],
        format: GraphFormat,
    ) -> String {
        use std::fmt::Write;
        let label = |i: usize| {
            let s = &manifest.stages[i];
            let n = jobs[i].map_or_else(|| "? jobs".to_owned(), |n| crate::error::count(n, "job"));
            let each = match &s.source {
                JobSource::ForEach(up) => format!(", for each job of {up}"),
                _ => String::new(),
            };
            format!("{} ({n}, {}{each})", s.name, s.settings.backend)
        };
        let mut out = String::new();
        match format {
            GraphFormat::Dot => {
                out.push_str("digraph poolparty {\n  rankdir=LR;\n");
                for &i in &self.order {
                    let _ = writeln!(
                        out,
                        "  \"{}\" [label=\"{}\"];",
                        manifest.stages[i].name,
                        label(i)
                    );
                }
                for e in self.graph.edge_references() {
                    let _ = writeln!(
                        out,
                        "  \"{}\" -> \"{}\";",
                        manifest.stages[e.source().index()].name,
                        manifest.stages[e.target().index()].name
                    );
                }
                out.push_str("}\n");
            }
            GraphFormat::Mermaid => {
                let ids = mermaid_ids(manifest);
                out.push_str("flowchart LR\n");
                for &i in &self.order {
                    let _ = writeln!(out, "  {}[\"{}\"]", ids[i], label(i));
                }
                for e in self.graph.edge_references() {
                    let _ = writeln!(
                        out,
                        "  {} --> {}",
                        ids[e.source().index()],
                        ids[e.target().index()]
                    );
                }
            }
            GraphFormat::Text => {
                for &i in &self.order {
                    let needs: Vec<String> = self
                        .needs(i)
                        .into_iter()
                        .map(|j| manifest.stages[j].name.to_string())
                        .collect();
                    let _ = write!(out, "{}", label(i));
                    if !needs.is_empty() {
                        let _ = write!(out, "  <- needs {}", needs.join(", "));
                    }
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Output formats of `poolparty graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// One line per stage, in run order.
    Text,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Words Mermaid's flowchart grammar reads as keywords (compared in lower case).
const MERMAID_KEYWORDS: &[&str] = &[
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "style",
    "classdef",
    "class",
    "click",
    "linkstyle",
    "direction",
    "default",
    "call",
    "href",
    "callback",
    "interpolate",
    "acctitle",
    "accdescr",
    "tb",
    "td",
    "bt",
    "rl",
    "lr",
];

/// A Mermaid node id per stage: the stage's name when Mermaid reads it as a plain id, else
/// `stage_<name>` (with `-` as `_`, and more `_` in front until no other id has it). The
/// label always shows the real name.
fn mermaid_ids(manifest: &Manifest) -> Vec<String> {
    let plain = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_alphabetic())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !MERMAID_KEYWORDS.contains(&n.to_ascii_lowercase().as_str())
    };
    let mut ids: Vec<String> = manifest
        .stages
        .iter()
        .map(|s| s.name.as_str().to_owned())
        .collect();
    for i in 0..ids.len() {
        if plain(&ids[i]) {
            continue;
        }
        let mut id = format!("stage_{}", ids[i].replace('-', "_"));
        while ids.contains(&id) {
            id.insert(0, '_');
        }
        ids[i] = id;
    }
    ids
}

/// A cycle as node weights, first node repeated at the end, following edge direction.
fn find_cycle(graph: &DiGraph<usize, ()>) -> Option<Vec<usize>> {
    let scc = tarjan_scc(graph).into_iter().find(|c| c.len() > 1)?;
    // Walk inside the component from its first node until we return to it.
    let start = scc[0];
    let mut path = vec![start];
    let mut seen = std::collections::HashSet::new();
    seen.insert(start);
    let mut cur = start;
    loop {
        let next = graph
            .neighbors(cur)
            .filter(|n| scc.contains(n))
            .find(|n| *n == start || !seen.contains(n))?;
        path.push(next);
        if next == start {
            break;
        }
        seen.insert(next);
        cur = next;
    }
    Some(path.into_iter().map(|n| graph[n]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;
    use std::path::Path;

    fn m(stages: &str) -> Manifest {
        parse(
            Path::new("/tmp/p.toml"),
            format!("[workflow]\nname='w'\n{stages}"),
        )
        .unwrap()
    }

    #[test]
    fn order_respects_needs() {
        let m = m(
            "[stages.c]\njobs=[1]\nrun='x'\nneeds=['b']\n[stages.b]\njobs=[1]\nrun='x'\nneeds=['a']\n[stages.a]\njobs=[1]\nrun='x'\n",
        );
        let g = StageGraph::build(&m).unwrap();
        let names: Vec<&str> = g
            .order()
            .iter()
            .map(|&i| m.stages[i].name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(g.upstream(0).len(), 2);
    }

    #[test]
    fn cycle_names_every_stage() {
        let m = m(
            "[stages.a]\njobs=[1]\nrun='x'\nneeds=['c']\n[stages.b]\njobs=[1]\nrun='x'\nneeds=['a']\n[stages.c]\njobs=[1]\nrun='x'\nneeds=['b']\n",
        );
        match StageGraph::build(&m).unwrap_err() {
            Error::Cycle { cycle, spans, .. } => {
                assert_eq!(cycle.len(), 4);
                assert_eq!(cycle.first(), cycle.last());
                assert_eq!(spans.len(), 3);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn unknown_need_suggests() {
        let m = m(
            "[stages.analyse]\njobs=[1]\nrun='x'\n[stages.b]\njobs=[1]\nrun='x'\nneeds=['analyze']\n",
        );
        match StageGraph::build(&m).unwrap_err() {
            Error::UnknownStage { help, .. } => {
                assert_eq!(help.as_deref(), Some("did you mean `analyse`?"))
            }
            e => panic!("{e:?}"),
        }
    }
}
