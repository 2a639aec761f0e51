//! The scoring layout of an isolation forest, rebuilt from its trees on load: the AVX2 walk
//! where the CPU and the forest allow it, else a portable walk one node at a time.

use super::Tree;

/// Trees walked side by side.
const LANES: usize = 8;

/// A forest laid out for scoring, in the fastest form this CPU can walk.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Packed {
    Portable(PortableForest),
    #[cfg(target_arch = "x86_64")]
    Avx2(super::avx2::RankedForest),
}

impl Packed {
    /// Chooses the layout once per forest, so scoring a reading does not ask the CPU again.
    pub(super) fn of(trees: &[Tree]) -> Packed {
        #[cfg(target_arch = "x86_64")]
        if let Some(ranked) = super::avx2::RankedForest::of(trees) {
            return Packed::Avx2(ranked);
        }
        Packed::Portable(PortableForest::of(trees))
    }

    /// The sum over trees of the path length of `x`, each value compared as `f32`.
    pub(super) fn path_length_sum(&self, x: &[f32]) -> f32 {
        match self {
            Packed::Portable(forest) => forest.path_length_sum(x),
            #[cfg(target_arch = "x86_64")]
            Packed::Avx2(forest) => forest.path_length_sum(x),
        }
    }
}

/// One internal node of the portable layout: 8 bytes, one load per step.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    threshold: f32,
    feature: u32,
}

/// Every tree's nodes in one array (all trees have the same depth), walked with plain loads.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PortableForest {
    depth: u8,
    internal: usize,
    trees: usize,
    nodes: Vec<Node>,
    leaf_path: Vec<f32>,
}

impl PortableForest {
    pub(super) fn of(trees: &[Tree]) -> PortableForest {
        let depth = trees.first().map_or(0, |t| t.depth);
        let internal = (1usize << depth) - 1;
        let mut forest =
            PortableForest { depth, internal, trees: trees.len(), nodes: Vec::new(), leaf_path: Vec::new() };
        for tree in trees {
            debug_assert_eq!(tree.depth, depth);
            forest.nodes.extend(
                tree.feature.iter().zip(&tree.threshold).map(|(f, t)| Node { threshold: *t, feature: u32::from(*f) }),
            );
            forest.leaf_path.extend(&tree.leaf_path);
        }
        forest
    }

    pub(super) fn path_length_sum(&self, x: &[f32]) -> f32 {
        // Trees in lock step, LANES at a time: independent chains of loads the CPU overlaps.
        let (internal, leaves) = (self.internal, self.internal + 1);
        let mut total = 0f32;
        let full_groups = self.trees / LANES;
        let group_nodes = self.nodes.chunks_exact(internal * LANES);
        let group_leaves = self.leaf_path.chunks_exact(leaves * LANES);
        for (group, group_leaf) in group_nodes.zip(group_leaves).take(full_groups) {
            let mut index = [0usize; LANES];
            for _ in 0..self.depth {
                for (lane, i) in index.iter_mut().enumerate() {
                    let node = group[lane * internal + *i];
                    let go_right = x[node.feature as usize] >= node.threshold;
                    *i = 2 * *i + 1 + usize::from(go_right);
                }
            }
            for (lane, i) in index.iter().enumerate() {
                total += group_leaf[lane * leaves + (i - internal)];
            }
        }
        for tree in full_groups * LANES..self.trees {
            let mut i = 0;
            for _ in 0..self.depth {
                let node = self.nodes[tree * internal + i];
                i = 2 * i + 1 + usize::from(x[node.feature as usize] >= node.threshold);
            }
            total += self.leaf_path[tree * leaves + (i - internal)];
        }
        total
    }
}
