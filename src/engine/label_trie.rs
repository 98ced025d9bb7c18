//! Constrained label scoring maths, independent of llama.cpp.
//!
//! The intent model never generates free text: it may only answer one of the
//! flow's labels. Each label is a token sequence (the label text followed by
//! the end-of-turn token, so no label is a prefix of another). The sequences
//! form a trie; the probability of a label is the product, over the trie nodes
//! on its path that have more than one child, of the model's next-token
//! distribution renormalised over that node's children. That is exactly the
//! distribution of grammar-constrained decoding restricted to the label set,
//! so the label probabilities sum to 1 and serve as the confidence.
//!
//! Nodes with a single child contribute probability 1 and need no model
//! evaluation: with the usual labels (`order_status`, `cancel_order`, ...)
//! every label starts with a different token and one logit vector, the one
//! after the caller's words, decides the turn.

/// A token id, as the model's vocabulary numbers it.
pub type TokenId = i32;

/// A trie node that has more than one child: the model must be evaluated at
/// the end of `path` (tokens after the prompt) to split probability between
/// `children`.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchPoint {
    /// Tokens from the trie root to this node (empty for the root).
    pub path: Vec<TokenId>,
    /// The distinct next tokens.
    pub children: Vec<TokenId>,
}

#[derive(Debug, Clone)]
pub struct LabelTrie {
    labels: Vec<Vec<TokenId>>,
    branch_points: Vec<BranchPoint>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LabelTrieError {
    #[error("no labels to choose between")]
    Empty,
    #[error("label {0} tokenizes to nothing")]
    EmptyLabel(usize),
    #[error("labels {0} and {1} have the same tokens")]
    Duplicate(usize, usize),
    #[error("label {0} is a prefix of label {1}; end every label with an end token")]
    Prefix(usize, usize),
}

impl LabelTrie {
    pub fn new(labels: Vec<Vec<TokenId>>) -> Result<Self, LabelTrieError> {
        if labels.is_empty() {
            return Err(LabelTrieError::Empty);
        }
        if let Some(i) = labels.iter().position(Vec::is_empty) {
            return Err(LabelTrieError::EmptyLabel(i));
        }
        for (i, a) in labels.iter().enumerate() {
            for (j, b) in labels.iter().enumerate().skip(i + 1) {
                if a == b {
                    return Err(LabelTrieError::Duplicate(i, j));
                }
                if b.starts_with(a) {
                    return Err(LabelTrieError::Prefix(i, j));
                }
                if a.starts_with(b) {
                    return Err(LabelTrieError::Prefix(j, i));
                }
            }
        }
        let mut branch_points = Vec::new();
        collect_branch_points(&labels, &(0..labels.len()).collect::<Vec<_>>(), 0, &mut branch_points);
        Ok(LabelTrie { labels, branch_points })
    }

    /// The nodes at which the model must be evaluated, root first when the
    /// root branches.
    pub fn branch_points(&self) -> &[BranchPoint] {
        &self.branch_points
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Label probabilities given, for each branch point (same order as
    /// [`Self::branch_points`]), a function from token to logit at that point.
    /// `temperature` scales the logits before renormalising (calibration).
    pub fn probabilities(&self, temperature: f32, logit_at: impl Fn(usize, TokenId) -> f32) -> Vec<f32> {
        let t = if temperature > 0.0 { temperature } else { 1.0 };
        // log-probability of each child at each branch point
        let child_logp: Vec<Vec<(TokenId, f32)>> = self
            .branch_points
            .iter()
            .enumerate()
            .map(|(b, bp)| {
                let scaled: Vec<f32> = bp.children.iter().map(|&tok| logit_at(b, tok) / t).collect();
                let max = scaled.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let log_z = max + scaled.iter().map(|s| (s - max).exp()).sum::<f32>().ln();
                bp.children.iter().zip(scaled).map(|(&tok, s)| (tok, s - log_z)).collect()
            })
            .collect();
        let logps: Vec<f32> = self
            .labels
            .iter()
            .map(|label| {
                let mut lp = 0.0f32;
                for (b, bp) in self.branch_points.iter().enumerate() {
                    let depth = bp.path.len();
                    if label.len() > depth && label[..depth] == bp.path[..] {
                        let next = label[depth];
                        lp += child_logp[b].iter().find(|(tok, _)| *tok == next).map(|(_, l)| *l).unwrap_or(f32::NEG_INFINITY);
                    }
                }
                lp
            })
            .collect();
        // Already normalised by construction; renormalise to absorb rounding.
        let max = logps.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logps.iter().map(|l| (l - max).exp()).collect();
        let z: f32 = exps.iter().sum();
        exps.into_iter().map(|e| e / z).collect()
    }
}

fn collect_branch_points(labels: &[Vec<TokenId>], members: &[usize], depth: usize, out: &mut Vec<BranchPoint>) {
    let mut children: Vec<TokenId> = Vec::new();
    for &m in members {
        if let Some(&tok) = labels[m].get(depth) {
            if !children.contains(&tok) {
                children.push(tok);
            }
        }
    }
    if children.len() > 1 {
        out.push(BranchPoint { path: labels[members[0]][..depth].to_vec(), children: children.clone() });
    }
    for tok in children {
        let sub: Vec<usize> = members.iter().copied().filter(|&m| labels[m].get(depth) == Some(&tok)).collect();
        collect_branch_points(labels, &sub, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_first_tokens_need_one_evaluation() {
        let trie = LabelTrie::new(vec![vec![1, 9], vec![2, 3, 9], vec![4, 9]]).unwrap();
        assert_eq!(trie.branch_points(), &[BranchPoint { path: vec![], children: vec![1, 2, 4] }]);
        let p = trie.probabilities(1.0, |_, tok| if tok == 2 { 2.0 } else { 0.0 });
        let z = 2.0f32.exp() + 2.0;
        assert!((p[1] - 2.0f32.exp() / z).abs() < 1e-6);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn shared_prefixes_branch_deeper() {
        // "order_status", "order_cancel", "other" style
        let trie = LabelTrie::new(vec![vec![5, 6, 9], vec![5, 7, 9], vec![8, 9]]).unwrap();
        let bps = trie.branch_points();
        assert_eq!(bps.len(), 2);
        assert_eq!(bps[0].path, Vec::<TokenId>::new());
        assert_eq!(bps[1].path, vec![5]);
        // root: 5 vs 8 equal; at [5]: 6 much likelier than 7
        let p = trie.probabilities(1.0, |b, tok| match (b, tok) {
            (1, 6) => 10.0,
            _ => 0.0,
        });
        assert!((p[2] - 0.5).abs() < 1e-6);
        assert!(p[0] > 0.49 && p[1] < 0.01);
    }

    #[test]
    fn temperature_flattens() {
        let trie = LabelTrie::new(vec![vec![1], vec![2]]).unwrap();
        let sharp = trie.probabilities(1.0, |_, t| if t == 1 { 4.0 } else { 0.0 });
        let flat = trie.probabilities(4.0, |_, t| if t == 1 { 4.0 } else { 0.0 });
        assert!(sharp[0] > flat[0] && flat[0] > 0.5);
    }

    #[test]
    fn malformed_label_sets_are_rejected() {
        assert_eq!(LabelTrie::new(vec![]).unwrap_err(), LabelTrieError::Empty);
        assert_eq!(LabelTrie::new(vec![vec![1], vec![]]).unwrap_err(), LabelTrieError::EmptyLabel(1));
        assert_eq!(LabelTrie::new(vec![vec![1, 2], vec![1, 2]]).unwrap_err(), LabelTrieError::Duplicate(0, 1));
        assert_eq!(LabelTrie::new(vec![vec![1, 2, 3], vec![1, 2]]).unwrap_err(), LabelTrieError::Prefix(1, 0));
    }
}
