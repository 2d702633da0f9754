//! Clocks, a latency histogram and readers for /proc (CPU time and memory of the server
//! and of loadgen itself).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process-wide epoch (the first call). Senders stamp packets with
/// it and receivers compare against it: one clock, so one-way latency needs no sync.
pub fn now_us() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(epoch).as_micros() as u64
}

/// The `Instant` of a [`now_us`] value.
pub fn instant_of_us(us: u64) -> Instant {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch + Duration::from_micros(us)
}

/// Log-linear histogram of µs values: exact below 128, then 64 buckets per power of two
/// (about 1.5 % resolution). Fixed size, no allocation when recording.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = SUB * 60;

fn bucket(v: u64) -> usize {
    if v < 2 * SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    ((shift as usize) * SUB + (v >> shift) as usize).min(BUCKETS - 1)
}

fn lower_bound(idx: usize) -> u64 {
    if idx < 2 * SUB {
        return idx as u64;
    }
    let shift = idx / SUB - 1;
    let mant = (idx % SUB + SUB) as u64;
    mant << shift
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<u64> {
        (self.total > 0).then(|| (self.sum / self.total as u128) as u64)
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket, at most the maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = lower_bound(i);
                let hi = lower_bound(i + 1);
                return Some((lo + (hi - lo).saturating_sub(1) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Startup check of the bucket arithmetic.
    pub fn self_check() {
        for v in [0u64, 1, 127, 128, 129, 200, 1000, 65_535, 1 << 30] {
            let b = bucket(v);
            assert!(
                lower_bound(b) <= v && v < lower_bound(b + 1),
                "bucket of {v}"
            );
        }
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((490..=510).contains(&p50), "p50 {p50}");
        assert_eq!(h.quantile(1.0), Some(1000));
    }
}

/// Clock ticks per second for /proc times.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in seconds from a /proc/.../stat file.
fn stat_cpu_seconds(path: &str) -> Result<f64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    // The command name is in parentheses and may contain spaces: fields start after ')'.
    let rest = s
        .rsplit_once(')')
        .map(|x| x.1)
        .ok_or_else(|| format!("unexpected format of {path}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> Result<f64, String> {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| format!("unexpected format of {path}"))
    };
    Ok((ticks(11)? + ticks(12)?) / clk_tck())
}

/// CPU seconds (user + system) of a process.
pub fn process_cpu_seconds(pid: u32) -> Result<f64, String> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of one thread of this process: nanoseconds on CPU from schedstat when the
/// kernel has it, else the (10 ms resolution) ticks of stat.
pub fn thread_cpu_seconds(tid: i64) -> Result<f64, String> {
    let ns = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
    match ns {
        Some(ns) => Ok(ns as f64 / 1e9),
        None => stat_cpu_seconds(&format!("/proc/self/task/{tid}/stat")),
    }
}

/// CPU seconds of this process, from getrusage (finer than /proc ticks).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i64 {
    // SAFETY: SYS_gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// Memory of a process from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn process_memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Ok(Memory {
        rss_kb: field("VmRSS:").ok_or_else(|| format!("no VmRSS in {path}"))?,
        hwm_kb: field("VmHWM:").ok_or_else(|| format!("no VmHWM in {path}"))?,
    })
}

/// Host-wide (network namespace) UDP counters from /proc/net/snmp: (InErrors,
/// RcvbufErrors, SndbufErrors). A receive buffer overflow anywhere (server or loadgen)
/// shows up here.
pub fn udp_errors() -> Option<(u64, u64, u64)> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |n: &str| -> Option<u64> {
        let i = names.iter().position(|x| *x == n)?;
        values.get(i)?.parse().ok()
    };
    Some((get("InErrors")?, get("RcvbufErrors")?, get("SndbufErrors")?))
}

/// Number of CPUs this process may run on.
pub fn allowed_cpus() -> usize {
    // SAFETY: sched_getaffinity writes into the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let n = libc::CPU_COUNT(&set);
            if n > 0 {
                return n as usize;
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pin the calling thread (and threads it spawns later) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} is out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity(CPU {cpu}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
