//! Which slice of a build this process renders: `--worker i/n`, or the index and count that a
//! Slurm job array or a Kubernetes Indexed Job gives each task.

use acs_schema::WorkerSlice;

use crate::error::AcsError;

/// Where a worker slice came from, for the build's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerChoice {
    /// The slice.
    pub slice: WorkerSlice,
    /// `--worker`, `SLURM_ARRAY_TASK_ID`, or `JOB_COMPLETION_INDEX`.
    pub source: &'static str,
}

/// Parses `i/n` (0 <= i < n).
pub fn parse_worker(text: &str) -> Result<WorkerSlice, String> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not of the form i/n (e.g. 0/4)"))?;
    let index: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: worker index `{i}` is not a number"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: worker count `{n}` is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("`{text}`: need 0 <= i < n"));
    }
    Ok(WorkerSlice { index, count })
}

/// The slice to render: `--worker` when given (`0/1` means the whole build), else a Slurm
/// array task (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`),
/// else a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of `ACS_WORKER_COUNT`), else none.
/// `env` reads a variable (std::env::var in the binary).
pub fn choose_worker(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<WorkerChoice>, AcsError> {
    let bad = |name: &str, reason: String| AcsError::input(format!("{name}: {reason}"));
    if let Some(text) = flag {
        let slice = parse_worker(text).map_err(|r| bad("--worker", r))?;
        return Ok((slice.count > 1).then_some(WorkerChoice {
            slice,
            source: "--worker",
        }));
    }
    let number = |name: &str| -> Result<Option<u32>, AcsError> {
        match env(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(name, format!("`{v}` is not a number"))),
        }
    };
    if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
        let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
            bad(
                "SLURM_ARRAY_TASK_ID",
                "set without SLURM_ARRAY_TASK_COUNT; pass --worker i/n".into(),
            )
        })?;
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = task.checked_sub(min).ok_or_else(|| {
            bad(
                "SLURM_ARRAY_TASK_ID",
                format!("{task} is below SLURM_ARRAY_TASK_MIN {min}"),
            )
        })?;
        let slice = parse_worker(&format!("{index}/{count}")).map_err(|r| {
            bad(
                "SLURM_ARRAY_TASK_ID",
                r + " (use a contiguous array such as --array=0-3)",
            )
        })?;
        return Ok((count > 1).then_some(WorkerChoice {
            slice,
            source: "SLURM_ARRAY_TASK_ID",
        }));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("ACS_WORKER_COUNT")?.ok_or_else(|| {
            bad(
                "JOB_COMPLETION_INDEX",
                "set without ACS_WORKER_COUNT (the Job's completions); pass --worker i/n".into(),
            )
        })?;
        let slice = parse_worker(&format!("{index}/{count}"))
            .map_err(|r| bad("JOB_COMPLETION_INDEX", r))?;
        return Ok((count > 1).then_some(WorkerChoice {
            slice,
            source: "JOB_COMPLETION_INDEX",
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn flag_wins_and_is_checked() {
        let c = choose_worker(Some("2/4"), env(&[("SLURM_ARRAY_TASK_ID", "1")])).unwrap();
        assert_eq!(c.unwrap().slice, WorkerSlice { index: 2, count: 4 });
        assert_eq!(choose_worker(Some("0/1"), env(&[])).unwrap(), None);
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            let err = choose_worker(Some(bad), env(&[])).unwrap_err().to_string();
            assert!(err.starts_with("--worker: "), "{err}");
        }
    }

    #[test]
    fn slurm_arrays_and_indexed_jobs() {
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let c = choose_worker(None, env(&slurm)).unwrap().unwrap();
        assert_eq!(
            (c.slice, c.source),
            (WorkerSlice { index: 2, count: 4 }, "SLURM_ARRAY_TASK_ID")
        );
        let k8s = [("JOB_COMPLETION_INDEX", "0"), ("ACS_WORKER_COUNT", "3")];
        let c = choose_worker(None, env(&k8s)).unwrap().unwrap();
        assert_eq!(c.slice, WorkerSlice { index: 0, count: 3 });
        let err = choose_worker(None, env(&[("JOB_COMPLETION_INDEX", "0")])).unwrap_err();
        assert!(err.to_string().contains("ACS_WORKER_COUNT"));
        let err = choose_worker(None, env(&[("SLURM_ARRAY_TASK_ID", "x")])).unwrap_err();
        assert!(err.to_string().contains("not a number"));
        assert_eq!(choose_worker(None, env(&[])).unwrap(), None);
    }
}
