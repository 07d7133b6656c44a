/// Merge overlapping closed intervals, returning them sorted by start.
pub fn merge(mut intervals: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    intervals.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn merges_overlaps() {
        assert_eq!(merge(vec![(5, 7), (1, 3), (2, 4)]), vec![(1, 4), (5, 7)]);
    }
}
