//! Sets of an indexed Job's completion indexes in upstream's compressed
//! text form (`"1,3-5,7"`): the Job's `completedIndexes` and
//! `failedIndexes`, and a success policy's `succeededIndexes`.

use std::fmt;

/// Ordered, disjoint, non-adjacent intervals of indexes, each inclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Indexes(Vec<(i32, i32)>);

impl Indexes {
    /// Reads `text` as the job controller does: a fragment that does not
    /// parse is skipped, and indexes at or past `completions` are dropped.
    pub fn read(text: &str, completions: i32) -> Self {
        let mut out = Self::default();
        for fragment in text.split(',').filter(|f| !f.is_empty()) {
            let mut limits = fragment.split('-');
            let Some(Ok(first)) = limits.next().map(str::parse::<i32>) else {
                continue;
            };
            if first >= completions {
                break;
            }
            let last = match limits.next().map(str::parse::<i32>) {
                None => first,
                Some(Ok(last)) => last.min(completions - 1),
                Some(Err(_)) => continue,
            };
            out.push(first, last);
        }
        out
    }

    /// Checks `text` as upstream's API validation does, and counts the
    /// indexes it names.
    pub fn check(text: &str, completions: i32) -> Result<i64, String> {
        if text.is_empty() {
            return Ok(0);
        }
        let mut last: Option<i32> = None;
        let mut total = 0i64;
        for fragment in text.split(',') {
            let (first, end) = interval(fragment, completions)?;
            if let Some(previous) = last.filter(|&l| l >= first) {
                return Err(format!(
                    "non-increasing order, previous: {previous}, current: {first}"
                ));
            }
            total += i64::from(end - first) + 1;
            last = Some(end);
        }
        Ok(total)
    }

    /// These indexes and `more`.
    pub fn with(&self, more: impl IntoIterator<Item = i32>) -> Self {
        let singles = more.into_iter().map(|i| (i, i));
        Self::of_intervals(self.0.iter().copied().chain(singles))
    }

    /// These indexes and `other`'s.
    pub fn union(&self, other: &Indexes) -> Self {
        Self::of_intervals(self.0.iter().chain(&other.0).copied())
    }

    fn of_intervals(intervals: impl Iterator<Item = (i32, i32)>) -> Self {
        let mut all: Vec<(i32, i32)> = intervals.collect();
        all.sort_unstable();
        let mut out = Self::default();
        for (first, last) in all {
            out.push(first, last);
        }
        out
    }

    /// Appends an interval that starts at or after the last one's start.
    fn push(&mut self, first: i32, last: i32) {
        match self.0.last_mut() {
            Some(end) if first <= end.1.saturating_add(1) => end.1 = end.1.max(last),
            _ => self.0.push((first, last)),
        }
    }

    pub fn has(&self, index: i32) -> bool {
        let at = self.0.partition_point(|&(_, last)| last < index);
        self.0.get(at).is_some_and(|&(first, _)| first <= index)
    }

    pub fn total(&self) -> i64 {
        self.0
            .iter()
            .map(|&(first, last)| i64::from(last - first) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many of `self`'s indexes are also in `other`.
    pub fn common(&self, other: &Indexes) -> i64 {
        let (mut a, mut b, mut count) = (0, 0, 0i64);
        while let (Some(&(af, al)), Some(&(bf, bl))) = (self.0.get(a), other.0.get(b)) {
            count += i64::from((al.min(bl) - af.max(bf) + 1).max(0));
            if al <= bl {
                a += 1;
            }
            if bl <= al {
                b += 1;
            }
        }
        count
    }

    /// The first `count` indexes below `completions` not in `self`.
    pub fn first_missing(&self, count: usize, completions: i32) -> Vec<i32> {
        let mut out = Vec::with_capacity(count);
        let mut candidate = 0;
        let mut taken = self.0.iter().peekable();
        while candidate < completions && out.len() < count {
            match taken.peek() {
                Some(&&(first, last)) if candidate >= first => {
                    candidate = candidate.max(last + 1);
                    taken.next();
                }
                _ => {
                    out.push(candidate);
                    candidate += 1;
                }
            }
        }
        out
    }
}

/// One fragment (`"3"` or `"3-5"`) of a well-formed set.
fn interval(fragment: &str, completions: i32) -> Result<(i32, i32), String> {
    let limits: Vec<&str> = fragment.split('-').collect();
    if limits.len() > 2 {
        return Err(format!("the fragment {fragment:?} violates the requirement that an index interval can have at most two parts separated by '-'"));
    }
    let index = |s: &str| -> Result<i32, String> {
        let i: i64 = s
            .parse()
            .map_err(|_| format!("cannot convert string to integer for index: {s:?}"))?;
        if i >= i64::from(completions) {
            return Err(format!("too large index: {s:?}"));
        }
        Ok(i as i32)
    };
    let first = index(limits[0])?;
    let Some(end) = limits.get(1) else {
        return Ok((first, first));
    };
    let last = index(end)?;
    if first >= last {
        return Err(format!(
            "non-increasing order, previous: {first}, current: {last}"
        ));
    }
    Ok((first, last))
}

/// Upstream's form: `a-b` for three or more in a row, `a,b` for two.
impl fmt::Display for Indexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, &(first, last)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match last - first {
                0 => write!(f, "{first}")?,
                1 => write!(f, "{first},{last}")?,
                _ => write!(f, "{first}-{last}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_merges_and_writes_as_upstream() {
        let set = Indexes::read("0,2-4,9", 8);
        assert_eq!(set.to_string(), "0,2-4", "9 is past completions");
        assert_eq!(set.with([1, 6]).to_string(), "0-4,6");
        assert_eq!(set.with([5]).to_string(), "0,2-5");
        assert_eq!(Indexes::default().with([3, 4]).to_string(), "3,4");
        assert_eq!(set.union(&Indexes::read("1,6-7", 8)).to_string(), "0-4,6,7");
        assert_eq!(set.total(), 4);
        assert!(set.has(3) && !set.has(1) && !set.has(5));
        assert_eq!(Indexes::read("x,1-2,5-y,6", 10).to_string(), "1,2,6");
    }

    #[test]
    fn finds_missing_and_common_indexes() {
        let set = Indexes::read("0,2-4", 8);
        assert_eq!(set.first_missing(3, 8), [1, 5, 6]);
        assert_eq!(set.first_missing(9, 6), [1, 5]);
        let rule = Indexes::read("1-3,7", 8);
        assert_eq!(rule.common(&set), 2);
        assert_eq!(set.common(&rule), 2);
    }

    #[test]
    fn checks_as_upstream_validation() {
        assert_eq!(Indexes::check("0,2-4", 5), Ok(4));
        assert_eq!(
            Indexes::check("1-2-3", 5).unwrap_err(),
            "the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts separated by '-'"
        );
        assert_eq!(
            Indexes::check("3,2", 5).unwrap_err(),
            "non-increasing order, previous: 3, current: 2"
        );
        assert_eq!(
            Indexes::check("4-2", 5).unwrap_err(),
            "non-increasing order, previous: 4, current: 2"
        );
        assert_eq!(
            Indexes::check("5", 5).unwrap_err(),
            "too large index: \"5\""
        );
        assert_eq!(
            Indexes::check("a", 5).unwrap_err(),
            "cannot convert string to integer for index: \"a\""
        );
    }
}
