//! Pure CPU work spread over the machine's cores, in order.
//!
//! Used once the directory server is done: the per-user and per-group work
//! (copying the LDAP directory's member ids; in the mapping, each user's target id,
//! each group's member indexes and member set; building and hashing each request;
//! in the diff, what each changed group gains and loses) is independent from item
//! to item and splits into one contiguous chunk per core.

use std::num::NonZeroUsize;

/// Below this many items a second thread costs more than it saves.
const MIN_CHUNK: usize = 256;

/// `items.iter().map(f).collect()`, computed on up to one thread per core. The
/// result is in the order of `items`; a panic in `f` propagates. A thread the system
/// refuses to start leaves its share to the calling thread.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let chunks = cores.min(items.len() / MIN_CHUNK).max(1);
    if chunks == 1 {
        return items.iter().map(f).collect();
    }
    let size = items.len().div_ceil(chunks);
    let f = &f;
    std::thread::scope(|s| {
        let mut parts = items.chunks(size);
        let first = parts.next().unwrap_or_default();
        let rest: Vec<_> = parts
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || part.iter().map(f).collect::<Vec<R>>())
                    .map_err(|_| part)
            })
            .collect();
        let mut out: Vec<R> = Vec::with_capacity(items.len());
        out.extend(first.iter().map(f));
        for started in rest {
            match started {
                Ok(handle) => match handle.join() {
                    Ok(part) => out.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(part) => out.extend(part.iter().map(f)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_of_the_items() {
        for n in [0, 1, 255, 256, 257, 1000, 4099] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(&items, |i| i * 2);
            assert_eq!(
                doubled,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }
}
