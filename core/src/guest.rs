//! Deterministic execution of untrusted WebAssembly claim code with the `wasmi` interpreter.
//!
//! # Guest ABI
//!
//! A claim's code is a WebAssembly module that
//!
//! * exports a linear memory named `memory` and a function `run` of type `() -> ()` or `() -> i32`
//!   (the `i32` result is ignored);
//! * imports nothing but functions from module `env` or `kernel`, each of type `(i32, i32) -> i32`:
//!   * `oracle_query(ptr, len)` and its alias `oracle_bucket(ptr, len)`: submit the `len` prediction
//!     bytes at `ptr` to the kernel's [`Oracle`]; returns the bucket (`>= 0`) or a negative code
//!     (see [`abi_error`]);
//!   * `emit_structured_claim(ptr, len)`: emits the `len` bytes at `ptr` as the canonical output,
//!     exactly once; returns `0`.
//! * has no `start` function (all guest code runs inside `run`, under the limits).
//!
//! Pointers and lengths are `i32` values read as unsigned 32-bit numbers, like Wasm addresses:
//! a negative length is a huge length.
//!
//! # Limits and how they are enforced
//!
//! * **Fuel**: wasmi fuel metering ([`Config::consume_fuel`]); the store starts with
//!   [`GuestLimits::fuel`] before instantiation. Running out → [`GuestError::FuelExhausted`].
//!   `memory.grow`/`memory.fill`/`memory.copy` also pay fuel for the bytes they touch (1 per 64 bytes).
//! * **Memory**: a module whose memory starts above [`GuestLimits::memory_pages`] is rejected before
//!   instantiation. `memory.grow` past the limit traps (a [`StoreLimits`] with `trap_on_grow_failure`)
//!   instead of returning `-1`; both give [`GuestError::MemoryLimitExceeded`]. Requests that Wasm
//!   itself refuses (beyond the module's *own* declared maximum, or beyond 65536 pages) keep standard
//!   semantics and return `-1`: wasmi answers them before asking the limiter, and memory stays within
//!   the limit anyway. Caveat (wasmi 2.0): a within-limit grow that cannot pay its fuel is also
//!   reported as `MemoryLimitExceeded` rather than `FuelExhausted`. Tables are capped too
//!   ([`MAX_TABLES`], [`MAX_TABLE_ELEMENTS`]); exceeding those is also `MemoryLimitExceeded` (it is
//!   host memory).
//! * **Oracle calls**: every call of `oracle_query`/`oracle_bucket` counts, malformed ones included.
//!   The call that goes over [`GuestLimits::max_oracle_calls`] is not forwarded to the oracle: it
//!   returns [`abi_error::TOO_MANY_CALLS`] to the guest, the guest keeps running, and when `run` ends
//!   (however it ends) the result is [`GuestError::TooManyOracleCalls`].
//!
//! When several things go wrong, the first one in execution order is reported: a host-detected
//! violation (too many oracle calls, output twice or too large, bad pointer in a host call) wins over
//! whatever happens after it.
//!
//! # Determinism
//!
//! The engine is configured once, identically for every call: eager compilation
//! (no lazy-translation fuel), fuel metering, explicit stack limits, no `start` function, no
//! multi-memory / memory64 / SIMD / tail calls, and the `deterministic` crate feature of wasmi, which
//! canonicalises NaN results so floating point is bit-for-bit reproducible across hosts. Fuel values
//! depend on wasmi's cost model, so the kernel should pin the exact wasmi version (Cargo.lock).
//!
//! Depends only on `wasmi` and `std`.

use std::fmt;
use std::ops::Range;

use wasmi::errors::{ErrorKind, InstantiationError, MemoryError, TableError};
use wasmi::{
    Caller, CompilationMode, Config, CustomFuelCosts, Engine, Extern, ExternType, Linker, Memory, Module, Store,
    StoreLimits, StoreLimitsBuilder, TrapCode, Val, ValType,
};

/// Largest accepted module, in bytes.
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;
/// Largest accepted output of `emit_structured_claim`, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 4096;
/// Largest accepted oracle submission, in bytes; a larger one gets [`abi_error::BAD_LENGTH`].
pub const MAX_PREDICTION_BYTES: usize = 4096;
/// Most tables a module may define (Rust and C toolchains use one).
pub const MAX_TABLES: usize = 4;
/// Most elements any one table may hold, initially or after `table.grow`.
pub const MAX_TABLE_ELEMENTS: usize = 65_536;
/// Bytes in a Wasm page.
pub const WASM_PAGE_BYTES: usize = 64 * 1024;

/// Maximum Wasm call depth; deeper recursion traps (deterministically).
const MAX_RECURSION_DEPTH: usize = 1024;
/// Maximum wasmi value-stack size, in bytes.
const MAX_STACK_BYTES: usize = 1024 * 1024;
/// Longest guest-controlled or engine-provided text kept in an error.
const MAX_ERROR_TEXT: usize = 100;
/// Longest import module or field name kept in [`GuestError::DisallowedImport`].
const MAX_NAME_TEXT: usize = 48;

/// Names a guest may import (from module `env` or `kernel`), all of type `(i32, i32) -> i32`.
const ORACLE_IMPORTS: [&str; 2] = ["oracle_query", "oracle_bucket"];
const EMIT_IMPORT: &str = "emit_structured_claim";
const IMPORT_MODULES: [&str; 2] = ["env", "kernel"];

/// Negative codes the host functions return to the guest. Non-negative oracle answers are buckets.
///
/// Codes `-1..=-15` are reserved for the host; an [`Oracle`] may return
/// [`abi_error::BAD_PREDICTIONS`] or any code `<= -16` of its own.
pub mod abi_error {
    /// `oracle_query`: `len` exceeds `MAX_PREDICTION_BYTES` (a negative `len` is a huge unsigned
    /// length). Guest memory is not read and the oracle is not consulted; the call still counts
    /// toward the oracle call limit.
    pub const BAD_LENGTH: i32 = -1;
    /// `oracle_query`: the call limit of the lane is exhausted. The oracle is not consulted and the
    /// run will end with `GuestError::TooManyOracleCalls` whatever the guest does next.
    pub const TOO_MANY_CALLS: i32 = -2;
    /// For [`Oracle`](super::Oracle) implementations: the submission could not be decoded.
    pub const BAD_PREDICTIONS: i32 = -3;
}

/// Execution limits of one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Fuel available to the whole execution (instantiation and `run`).
    pub fuel: u64,
    /// Most 64 KiB pages the guest memory may have, initially or after growing.
    pub memory_pages: u32,
    /// Most calls of `oracle_query`/`oracle_bucket`.
    pub max_oracle_calls: u32,
}

impl GuestLimits {
    /// The fast lane.
    pub const FAST: GuestLimits = GuestLimits { fuel: 1_000_000, memory_pages: 4, max_oracle_calls: 32 };
    /// The heavy lane.
    pub const HEAVY: GuestLimits = GuestLimits { fuel: 250_000, memory_pages: 2, max_oracle_calls: 8 };
}

/// What the kernel's oracle says about one submission of predictions.
pub trait Oracle {
    /// Returns the bucket (>= 0) or a negative ABI error code the guest sees.
    fn query(&mut self, predictions: &[u8]) -> i32;
}

/// A successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRun {
    /// The bytes passed to `emit_structured_claim`.
    pub output: Vec<u8>,
    /// Calls of `oracle_query`/`oracle_bucket`, including malformed ones that were not forwarded.
    pub oracle_calls: u32,
    /// Initial fuel minus remaining fuel.
    pub fuel_used: u64,
    /// Peak memory size in pages (the size at the end: memory never shrinks).
    pub memory_pages: u32,
}

/// Why a module was rejected or a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// Does not parse/validate as wasm (or is too large, or has a `start` function).
    InvalidModule(String),
    /// An import outside the ABI: wrong module, unknown name, wrong signature, or not a function.
    DisallowedImport { module: String, name: String },
    /// `"memory"` or `"run"` is missing or has the wrong kind/type.
    MissingExport(&'static str),
    /// Ran out of fuel.
    FuelExhausted,
    /// Memory (or table) above the lane limit, initially or by growing.
    MemoryLimitExceeded,
    /// More oracle calls than the lane allows.
    TooManyOracleCalls,
    /// The guest trapped (including out-of-bounds pointers given to host functions).
    Trap(String),
    /// `run` finished without calling `emit_structured_claim`.
    NoOutput,
    /// `emit_structured_claim` was called a second time.
    OutputTwice,
    /// `emit_structured_claim` was given more than [`MAX_OUTPUT_BYTES`].
    OutputTooLarge,
}

impl GuestError {
    /// True for running out of a budget: fuel, memory (or tables) or oracle calls. Everything else
    /// (invalid module, traps, output misuse) is a precondition failure of the claim.
    pub fn is_resource_exhausted(&self) -> bool {
        matches!(self, GuestError::FuelExhausted | GuestError::MemoryLimitExceeded | GuestError::TooManyOracleCalls)
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::InvalidModule(why) => write!(f, "invalid module: {why}"),
            GuestError::DisallowedImport { module, name } => write!(f, "disallowed import {module}::{name}"),
            GuestError::MissingExport(name) => write!(f, "missing or mistyped export {name}"),
            GuestError::FuelExhausted => f.write_str("fuel exhausted"),
            GuestError::MemoryLimitExceeded => f.write_str("memory limit exceeded"),
            GuestError::TooManyOracleCalls => f.write_str("too many oracle calls"),
            GuestError::Trap(why) => write!(f, "trap: {why}"),
            GuestError::NoOutput => f.write_str("no output emitted"),
            GuestError::OutputTwice => f.write_str("output emitted twice"),
            GuestError::OutputTooLarge => f.write_str("output too large"),
        }
    }
}

impl std::error::Error for GuestError {}

/// Checks the ABI without running anything: parses, validates, import allow-list, required exports.
pub fn validate_module(wasm: &[u8]) -> Result<(), GuestError> {
    compile(&Engine::new(&engine_config()), wasm).map(drop)
}

/// Runs `run` once under `limits`, calling `oracle` for each oracle_query. Deterministic: the same bytes,
/// limits and oracle answers give the same GuestRun or the same error, always.
pub fn execute(wasm: &[u8], limits: &GuestLimits, oracle: &mut dyn Oracle) -> Result<GuestRun, GuestError> {
    let engine = Engine::new(&engine_config());
    let module = compile(&engine, wasm)?;

    // Validation guarantees a single, exported, non-imported 32-bit memory.
    if let Some(ExternType::Memory(memory_type)) = module.get_export("memory")
        && memory_type.minimum() > u64::from(limits.memory_pages)
    {
        return Err(GuestError::MemoryLimitExceeded);
    }

    let memory_bytes = usize::try_from(limits.memory_pages).unwrap_or(usize::MAX).saturating_mul(WASM_PAGE_BYTES);
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(memory_bytes)
        .memories(1)
        .tables(MAX_TABLES)
        .table_elements(MAX_TABLE_ELEMENTS)
        .instances(1)
        .trap_on_grow_failure(true)
        .build();
    let state = HostState {
        oracle,
        store_limits,
        max_oracle_calls: limits.max_oracle_calls,
        oracle_calls: 0,
        output: None,
        violation: None,
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.store_limits);
    store.set_fuel(limits.fuel).expect("fuel metering is enabled in engine_config");

    let linker = host_linker(&engine);
    let instance = match linker.instantiate_and_start(&mut store, &module) {
        Ok(instance) => instance,
        Err(error) => return Err(classify_instantiation_error(&error)),
    };
    let memory = instance.get_memory(&store, "memory").ok_or(GuestError::MissingExport("memory"))?;
    let run = instance.get_func(&store, "run").ok_or(GuestError::MissingExport("run"))?;
    let result_count = run.ty(&store).results().len();
    let mut results = [Val::I32(0)];
    let results = results.get_mut(..result_count).ok_or(GuestError::MissingExport("run"))?;

    let outcome = run.call(&mut store, &[], results);

    let remaining = store.get_fuel().expect("fuel metering is enabled in engine_config");
    let fuel_used = limits.fuel.saturating_sub(remaining);
    let memory_pages = u32::try_from(memory.size(&store)).unwrap_or(u32::MAX);
    let state = store.into_data();
    if let Some(violation) = state.violation {
        return Err(violation);
    }
    if let Err(error) = outcome {
        return Err(classify_runtime_error(&error));
    }
    let output = state.output.ok_or(GuestError::NoOutput)?;
    Ok(GuestRun { output, oracle_calls: state.oracle_calls, fuel_used, memory_pages })
}

/// The one engine configuration used for validation and execution.
fn engine_config() -> Config {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        // Pin the dynamic costs instead of relying on wasmi's defaults (these equal them in 2.0).
        .fuel_cost(CustomFuelCosts {
            bytes_copied_per_fuel: 64,
            fuel_per_bytes_translated: 7,
            fuel_per_bytes_validated: 2,
        })
        // Compile everything up front: no fuel is charged for (or behaviour depends on) lazy translation.
        .compilation_mode(CompilationMode::Eager)
        .set_max_recursion_depth(MAX_RECURSION_DEPTH)
        .set_max_stack_height(MAX_STACK_BYTES)
        .allow_start_fn(false)
        .ignore_custom_sections(true)
        .wasm_multi_memory(false)
        .wasm_tail_call(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false);
    config
}

/// Parses and validates `wasm` and checks the guest ABI (imports and exports).
fn compile(engine: &Engine, wasm: &[u8]) -> Result<Module, GuestError> {
    if wasm.len() > MAX_MODULE_BYTES {
        return Err(GuestError::InvalidModule(format!("module larger than {MAX_MODULE_BYTES} bytes")));
    }
    let module =
        Module::new(engine, wasm).map_err(|error| GuestError::InvalidModule(clean_text(&error, MAX_ERROR_TEXT)))?;
    for import in module.imports() {
        let allowed = IMPORT_MODULES.contains(&import.module())
            && (ORACLE_IMPORTS.contains(&import.name()) || import.name() == EMIT_IMPORT)
            && matches!(import.ty(), ExternType::Func(ty)
                if ty.params() == [ValType::I32, ValType::I32] && ty.results() == [ValType::I32]);
        if !allowed {
            return Err(GuestError::DisallowedImport {
                module: clean_text(import.module(), MAX_NAME_TEXT),
                name: clean_text(import.name(), MAX_NAME_TEXT),
            });
        }
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(GuestError::MissingExport("memory"));
    }
    let run_ok = matches!(module.get_export("run"), Some(ExternType::Func(ty))
        if ty.params().is_empty() && matches!(ty.results(), [] | [ValType::I32]));
    if !run_ok {
        return Err(GuestError::MissingExport("run"));
    }
    Ok(module)
}

/// Per-run host state, owned by the wasmi store.
struct HostState<'a> {
    oracle: &'a mut dyn Oracle,
    store_limits: StoreLimits,
    max_oracle_calls: u32,
    oracle_calls: u32,
    output: Option<Vec<u8>>,
    /// The first violation detected by a host function; it decides the result of the run.
    violation: Option<GuestError>,
}

type HostCaller<'c, 'a> = Caller<'c, HostState<'a>>;

/// Records `error` as the run's violation (unless an earlier one exists) and makes the wasmi error
/// that aborts the guest.
fn abort(state: &mut HostState<'_>, error: GuestError) -> wasmi::Error {
    let message = error.to_string();
    state.violation.get_or_insert(error);
    wasmi::Error::new(message)
}

fn host_linker<'a>(engine: &Engine) -> Linker<HostState<'a>> {
    let mut linker = Linker::new(engine);
    for module in IMPORT_MODULES {
        for name in ORACLE_IMPORTS {
            linker.func_wrap(module, name, oracle_query).expect("host import names are unique");
        }
        linker.func_wrap(module, EMIT_IMPORT, emit_structured_claim).expect("host import names are unique");
    }
    linker
}

/// The guest's exported memory, looked up from inside a host call.
fn guest_memory(caller: &HostCaller<'_, '_>) -> Option<Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// `ptr..ptr + len` with both read as unsigned 32-bit numbers; `None` on overflow.
fn guest_range(ptr: i32, len: usize) -> Option<Range<usize>> {
    let start = ptr as u32 as usize;
    Some(start..start.checked_add(len)?)
}

fn oracle_query(mut caller: HostCaller<'_, '_>, ptr: i32, len: i32) -> Result<i32, wasmi::Error> {
    let state = caller.data_mut();
    state.oracle_calls = state.oracle_calls.saturating_add(1);
    if state.oracle_calls > state.max_oracle_calls {
        state.violation.get_or_insert(GuestError::TooManyOracleCalls);
        return Ok(abi_error::TOO_MANY_CALLS);
    }
    let len = len as u32 as usize;
    if len > MAX_PREDICTION_BYTES {
        return Ok(abi_error::BAD_LENGTH);
    }
    let Some(memory) = guest_memory(&caller) else {
        return Err(abort(caller.data_mut(), GuestError::Trap("no guest memory".into())));
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    match guest_range(ptr, len).and_then(|range| data.get(range)) {
        Some(predictions) => Ok(state.oracle.query(predictions)),
        None => Err(abort(state, GuestError::Trap("oracle_query: out of bounds".into()))),
    }
}

fn emit_structured_claim(mut caller: HostCaller<'_, '_>, ptr: i32, len: i32) -> Result<i32, wasmi::Error> {
    if caller.data().output.is_some() {
        return Err(abort(caller.data_mut(), GuestError::OutputTwice));
    }
    let len = len as u32 as usize;
    if len > MAX_OUTPUT_BYTES {
        return Err(abort(caller.data_mut(), GuestError::OutputTooLarge));
    }
    let Some(memory) = guest_memory(&caller) else {
        return Err(abort(caller.data_mut(), GuestError::Trap("no guest memory".into())));
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    match guest_range(ptr, len).and_then(|range| data.get(range)) {
        Some(output) => {
            state.output = Some(output.to_vec());
            Ok(0)
        }
        None => Err(abort(state, GuestError::Trap("emit_structured_claim: out of bounds".into()))),
    }
}

/// Maps an error of `run` (not caused by a host function) to a [`GuestError`].
fn classify_runtime_error(error: &wasmi::Error) -> GuestError {
    match error.kind() {
        ErrorKind::Memory(MemoryError::ResourceLimiterDeniedAllocation)
        | ErrorKind::Table(TableError::ResourceLimiterDeniedAllocation) => return GuestError::MemoryLimitExceeded,
        _ => {}
    }
    match error.as_trap_code() {
        Some(TrapCode::OutOfFuel) => GuestError::FuelExhausted,
        // Our StoreLimits deny growth only beyond the lane limits (the module's own maximum is checked
        // before the limiter is asked). Caveat: with `trap_on_grow_failure`, wasmi also reports a
        // within-limit grow that cannot pay its copy fuel this way, so that rare case is
        // MemoryLimitExceeded rather than FuelExhausted — still resource-exhausted, still deterministic.
        Some(TrapCode::GrowthOperationLimited) => GuestError::MemoryLimitExceeded,
        Some(code) => GuestError::Trap(code.trap_message().to_string()),
        None => GuestError::Trap(clean_text(error, MAX_ERROR_TEXT)),
    }
}

/// Maps an instantiation failure to a [`GuestError`].
fn classify_instantiation_error(error: &wasmi::Error) -> GuestError {
    match error.kind() {
        ErrorKind::Instantiation(
            InstantiationError::TooManyTables
            | InstantiationError::TooManyMemories
            | InstantiationError::FailedToInstantiateTable(_)
            | InstantiationError::FailedToInstantiateMemory(_),
        ) => GuestError::MemoryLimitExceeded,
        _ => classify_runtime_error(error),
    }
}

/// At most `max` bytes of `text` on one line: control characters become spaces, runs of
/// whitespace collapse to one space, and the cut falls on a char boundary.
fn clean_text(text: &(impl fmt::Display + ?Sized), max: usize) -> String {
    let mut out = String::new();
    for c in text.to_string().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c.is_whitespace() && out.ends_with(char::is_whitespace) {
            continue;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every submission and answers from a script (then 0).
    #[derive(Default)]
    struct ScriptedOracle {
        answers: Vec<i32>,
        seen: Vec<Vec<u8>>,
    }

    impl ScriptedOracle {
        fn new(answers: &[i32]) -> Self {
            ScriptedOracle { answers: answers.to_vec(), seen: Vec::new() }
        }
    }

    impl Oracle for ScriptedOracle {
        fn query(&mut self, predictions: &[u8]) -> i32 {
            let answer = self.answers.get(self.seen.len()).copied().unwrap_or(0);
            self.seen.push(predictions.to_vec());
            answer
        }
    }

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("test WAT must parse")
    }

    /// A module with the standard `env` imports, the given memory declaration and `run` body.
    fn guest(memory: &str, run_body: &str) -> Vec<u8> {
        wat(&format!(
            r#"(module
                 (import "env" "oracle_query" (func $query (param i32 i32) (result i32)))
                 (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
                 (memory (export "memory") {memory})
                 (func (export "run") {run_body}))"#
        ))
    }

    /// `run` body that emits the 4 bytes at address 0.
    const EMIT4: &str = "(drop (call $emit (i32.const 0) (i32.const 4)))";

    fn run_fast(wasm: &[u8]) -> Result<GuestRun, GuestError> {
        execute(wasm, &GuestLimits::FAST, &mut ScriptedOracle::default())
    }

    const WELL_BEHAVED: &str = r#"(module
        (import "env" "oracle_query" (func $query (param i32 i32) (result i32)))
        (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "run")
          (local $i i32) (local $b1 i32) (local $b2 i32)
          ;; predictions #1: bytes 0..16 = i * 3
          (loop $fill
            (i32.store8 (local.get $i) (i32.mul (local.get $i) (i32.const 3)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $fill (i32.lt_u (local.get $i) (i32.const 16))))
          (local.set $b1 (call $query (i32.const 0) (i32.const 16)))
          ;; predictions #2: "hi!" at 32
          (i32.store8 (i32.const 32) (i32.const 104))
          (i32.store8 (i32.const 33) (i32.const 105))
          (i32.store8 (i32.const 34) (i32.const 33))
          (local.set $b2 (call $query (i32.const 32) (i32.const 3)))
          ;; output at 64: [b1, b2, b1 * 10 + b2]
          (i32.store8 (i32.const 64) (local.get $b1))
          (i32.store8 (i32.const 65) (local.get $b2))
          (i32.store8 (i32.const 66) (i32.add (i32.mul (local.get $b1) (i32.const 10)) (local.get $b2)))
          (if (call $emit (i32.const 64) (i32.const 3)) (then unreachable))))"#;

    #[test]
    fn well_behaved_module_runs() {
        let wasm = wat(WELL_BEHAVED);
        assert_eq!(validate_module(&wasm), Ok(()));
        let mut oracle = ScriptedOracle::new(&[7, 3]);
        let run = execute(&wasm, &GuestLimits::FAST, &mut oracle).unwrap();
        assert_eq!(run.output, vec![7, 3, 73]);
        assert_eq!(run.oracle_calls, 2);
        assert_eq!(run.memory_pages, 1);
        assert!(run.fuel_used > 0 && run.fuel_used < GuestLimits::FAST.fuel);
        let first: Vec<u8> = (0u8..16).map(|i| i * 3).collect();
        assert_eq!(oracle.seen, vec![first, b"hi!".to_vec()]);
    }

    #[test]
    fn execution_is_deterministic() {
        let wasm = wat(WELL_BEHAVED);
        for limits in [GuestLimits::FAST, GuestLimits::HEAVY] {
            let mut first_oracle = ScriptedOracle::new(&[7, 3]);
            let mut second_oracle = ScriptedOracle::new(&[7, 3]);
            let first = execute(&wasm, &limits, &mut first_oracle).unwrap();
            let second = execute(&wasm, &limits, &mut second_oracle).unwrap();
            assert_eq!(first, second);
            assert_eq!(first_oracle.seen, second_oracle.seen);
        }
        // Fuel does not depend on the lane, only on the code path.
        let fast = execute(&wasm, &GuestLimits::FAST, &mut ScriptedOracle::new(&[7, 3])).unwrap();
        let heavy = execute(&wasm, &GuestLimits::HEAVY, &mut ScriptedOracle::new(&[7, 3])).unwrap();
        assert_eq!(fast.fuel_used, heavy.fuel_used);
    }

    #[test]
    fn run_returning_i32_works() {
        let wasm = wat(r#"(module
            (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "abcd")
            (func (export "run") (result i32)
              (drop (call $emit (i32.const 0) (i32.const 4)))
              (i32.const 42)))"#);
        assert_eq!(run_fast(&wasm).unwrap().output, b"abcd".to_vec());
    }

    #[test]
    fn kernel_module_and_bucket_alias_work() {
        let wasm = wat(r#"(module
            (import "kernel" "oracle_bucket" (func $bucket (param i32 i32) (result i32)))
            (import "env" "oracle_query" (func $query (param i32 i32) (result i32)))
            (import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "xyz")
            (func (export "run")
              (i32.store8 (i32.const 8) (call $bucket (i32.const 0) (i32.const 3)))
              (i32.store8 (i32.const 9) (call $query (i32.const 1) (i32.const 2)))
              (drop (call $emit (i32.const 8) (i32.const 2)))))"#);
        let mut oracle = ScriptedOracle::new(&[5, 6]);
        let run = execute(&wasm, &GuestLimits::FAST, &mut oracle).unwrap();
        assert_eq!(run.output, vec![5, 6]);
        assert_eq!(run.oracle_calls, 2);
        assert_eq!(oracle.seen, vec![b"xyz".to_vec(), b"yz".to_vec()]);
    }

    fn disallowed(module: &str, name: &str) -> GuestError {
        GuestError::DisallowedImport { module: module.into(), name: name.into() }
    }

    /// A minimal otherwise-valid module with one extra `import` line.
    fn with_import(import: &str) -> Vec<u8> {
        wat(&format!(r#"(module {import} (memory (export "memory") 1) (func (export "run")))"#))
    }

    #[test]
    fn disallowed_imports_are_rejected() {
        let cases = [
            (
                r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
                disallowed("wasi_snapshot_preview1", "fd_write"),
            ),
            (r#"(import "env" "clock_now" (func (result i64)))"#, disallowed("env", "clock_now")),
            (r#"(import "env" "oracle_query" (func (param i32) (result i32)))"#, disallowed("env", "oracle_query")),
            (
                r#"(import "env" "emit_structured_claim" (func (param i32 i32)))"#,
                disallowed("env", "emit_structured_claim"),
            ),
            (
                r#"(import "kernel" "oracle_bucket" (func (param i64 i32) (result i32)))"#,
                disallowed("kernel", "oracle_bucket"),
            ),
            (
                r#"(import "host" "oracle_query" (func (param i32 i32) (result i32)))"#,
                disallowed("host", "oracle_query"),
            ),
            (r#"(import "env" "table" (table 1 funcref))"#, disallowed("env", "table")),
            (r#"(import "env" "seed" (global i32))"#, disallowed("env", "seed")),
        ];
        for (import, expected) in cases {
            let wasm = with_import(import);
            assert_eq!(validate_module(&wasm), Err(expected.clone()), "{import}");
            assert_eq!(run_fast(&wasm), Err(expected), "{import}");
        }
    }

    #[test]
    fn imported_memory_is_rejected() {
        let wasm =
            wat(r#"(module (import "env" "memory" (memory 1)) (export "memory" (memory 0)) (func (export "run")))"#);
        assert_eq!(validate_module(&wasm), Err(disallowed("env", "memory")));
    }

    #[test]
    fn missing_or_mistyped_exports_are_rejected() {
        let memory = GuestError::MissingExport("memory");
        let run = GuestError::MissingExport("run");
        let cases = [
            (r#"(module (memory 1) (func (export "run")))"#, memory.clone()),
            (r#"(module (func (export "run")))"#, memory.clone()),
            (r#"(module (memory 1) (func (export "memory")) (func (export "run")))"#, memory),
            (r#"(module (memory (export "memory") 1))"#, run.clone()),
            (r#"(module (memory (export "memory") 1) (func (export "main")))"#, run.clone()),
            (r#"(module (memory (export "memory") 1) (func (export "run") (param i32)))"#, run.clone()),
            (r#"(module (memory (export "memory") 1) (func (export "run") (result i64) (i64.const 0)))"#, run.clone()),
            (
                r#"(module (memory (export "memory") 1) (func (export "run") (result i32 i32) (i32.const 0) (i32.const 0)))"#,
                run.clone(),
            ),
            (r#"(module (memory (export "memory") 1) (global (export "run") i32 (i32.const 0)))"#, run),
        ];
        for (text, expected) in cases {
            let wasm = wat(text);
            assert_eq!(validate_module(&wasm), Err(expected.clone()), "{text}");
            assert_eq!(run_fast(&wasm), Err(expected), "{text}");
        }
    }

    #[test]
    fn invalid_bytes_are_rejected() {
        let text = r#"(module (memory (export "memory") 1) (func (export "run")))"#;
        let type_error =
            wat(r#"(module (memory (export "memory") 1) (func (export "run") (drop (i64.const 0)) (i32.const 1)))"#);
        let cases: [&[u8]; 5] = [b"", b"not wasm at all", b"\0asm\x01\0\0\0\x01\x02", text.as_bytes(), &type_error];
        for wasm in cases {
            assert!(matches!(validate_module(wasm), Err(GuestError::InvalidModule(_))), "{wasm:?}");
            assert!(matches!(run_fast(wasm), Err(GuestError::InvalidModule(_))), "{wasm:?}");
        }
    }

    #[test]
    fn start_function_is_rejected() {
        let wasm = wat(r#"(module (memory (export "memory") 1) (func $init) (start $init) (func (export "run")))"#);
        assert!(matches!(validate_module(&wasm), Err(GuestError::InvalidModule(_))));
    }

    fn leb128(mut value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// A valid module padded with a custom section to exactly `total` bytes.
    fn padded_module(total: usize) -> Vec<u8> {
        let base = guest("1", EMIT4);
        let name = b"pad";
        let mut payload = total - base.len() - 1 - name.len() - 1;
        loop {
            let size = 1 + name.len() + payload;
            let len = base.len() + 1 + leb128(size).len() + size;
            if len == total {
                let mut wasm = base.clone();
                wasm.push(0);
                wasm.extend(leb128(size));
                wasm.push(name.len() as u8);
                wasm.extend_from_slice(name);
                wasm.resize(total, 0);
                return wasm;
            }
            payload -= len - total;
        }
    }

    #[test]
    fn module_size_limit() {
        let largest = padded_module(MAX_MODULE_BYTES);
        assert_eq!(largest.len(), MAX_MODULE_BYTES);
        assert_eq!(validate_module(&largest), Ok(()));
        let too_large = padded_module(MAX_MODULE_BYTES + 1);
        assert!(matches!(validate_module(&too_large), Err(GuestError::InvalidModule(_))));
        assert!(matches!(run_fast(&too_large), Err(GuestError::InvalidModule(_))));
    }

    #[test]
    fn infinite_loop_exhausts_fuel() {
        let wasm = guest("1", "(loop $forever (br $forever))");
        for limits in [GuestLimits::FAST, GuestLimits::HEAVY] {
            let error = execute(&wasm, &limits, &mut ScriptedOracle::default()).unwrap_err();
            assert_eq!(error, GuestError::FuelExhausted);
            assert!(error.is_resource_exhausted());
        }
    }

    /// `run` that loops `n` times, then emits.
    fn counting_guest(n: u32) -> Vec<u8> {
        guest(
            "1",
            &format!(
                "(local $i i32)
                 (loop $l
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
                 {EMIT4}"
            ),
        )
    }

    #[test]
    fn fuel_boundary_is_exact() {
        let needed = run_fast(&counting_guest(1000)).unwrap().fuel_used;
        let doubled = run_fast(&counting_guest(2000)).unwrap().fuel_used;
        // A linear loop: twice the iterations, about twice the fuel.
        assert!(doubled > needed && doubled < 2 * needed + 100, "{needed} {doubled}");

        let wasm = counting_guest(1000);
        let limits = |fuel| GuestLimits { fuel, ..GuestLimits::HEAVY };
        let exact = execute(&wasm, &limits(needed), &mut ScriptedOracle::default()).unwrap();
        assert_eq!(exact.fuel_used, needed);
        let roomy = execute(&wasm, &limits(needed + 1000), &mut ScriptedOracle::default()).unwrap();
        assert_eq!(roomy.fuel_used, needed);
        for fuel in [needed - 1, needed / 2, 0] {
            let error = execute(&wasm, &limits(fuel), &mut ScriptedOracle::default());
            assert_eq!(error, Err(GuestError::FuelExhausted), "fuel {fuel}");
        }
    }

    #[test]
    fn memory_grow_within_limit_reports_peak_pages() {
        let wasm =
            guest("1", &format!("(if (i32.ne (memory.grow (i32.const 3)) (i32.const 1)) (then unreachable)) {EMIT4}"));
        assert_eq!(run_fast(&wasm).unwrap().memory_pages, 4);
        let wasm = guest("1", &format!("(drop (memory.grow (i32.const 1))) {EMIT4}"));
        assert_eq!(execute(&wasm, &GuestLimits::HEAVY, &mut ScriptedOracle::default()).unwrap().memory_pages, 2);
    }

    #[test]
    fn memory_grow_beyond_limit_fails_the_run() {
        // The guest would happily continue (and emit) if grow returned -1.
        let wasm = guest("1", &format!("(drop (memory.grow (i32.const 4))) {EMIT4}"));
        let error = run_fast(&wasm).unwrap_err();
        assert_eq!(error, GuestError::MemoryLimitExceeded);
        assert!(error.is_resource_exhausted());
        let wasm = guest("1", &format!("(drop (memory.grow (i32.const 2))) {EMIT4}"));
        assert_eq!(
            execute(&wasm, &GuestLimits::HEAVY, &mut ScriptedOracle::default()),
            Err(GuestError::MemoryLimitExceeded)
        );
    }

    #[test]
    fn memory_grow_pays_fuel() {
        // Growing 3 pages costs 3 * 65536 / 64 = 3072 fuel on top of the instructions.
        let wasm = guest("1", &format!("(drop (memory.grow (i32.const 3))) {EMIT4}"));
        let plain = run_fast(&guest("1", &format!("(drop (memory.grow (i32.const 0))) {EMIT4}"))).unwrap();
        let grown = run_fast(&wasm).unwrap();
        assert_eq!(grown.fuel_used, plain.fuel_used + 3072);
        assert_eq!(grown.memory_pages, 4);
        // Known wasmi 2.0 limitation (see classify_runtime_error): a within-limit grow that cannot pay
        // its fuel is reported as MemoryLimitExceeded, not FuelExhausted. Both are resource-exhausted.
        let limits = GuestLimits { fuel: grown.fuel_used - 1, ..GuestLimits::FAST };
        let error = execute(&wasm, &limits, &mut ScriptedOracle::default()).unwrap_err();
        assert_eq!(error, GuestError::MemoryLimitExceeded);
        assert!(error.is_resource_exhausted());
    }

    #[test]
    fn memory_grow_that_wasm_itself_refuses_returns_minus_one() {
        // Beyond the module's own maximum, and beyond 65536 pages (delta 0xffff_ffff): standard -1,
        // checked by wasmi before the limiter is consulted. Memory stays within the lane limit.
        for (memory, delta) in [("1 2", 2), ("1", -1), ("1", 65536)] {
            let wasm = guest(memory, &format!("(i32.store (i32.const 0) (memory.grow (i32.const {delta}))) {EMIT4}"));
            let run = run_fast(&wasm).unwrap();
            assert_eq!(run.output, (-1i32).to_le_bytes().to_vec(), "{memory} {delta}");
            assert_eq!(run.memory_pages, 1);
        }
        // Within the module maximum but beyond the lane limit: the run fails.
        let wasm = guest("1 8", &format!("(drop (memory.grow (i32.const 5))) {EMIT4}"));
        assert_eq!(run_fast(&wasm), Err(GuestError::MemoryLimitExceeded));
    }

    #[test]
    fn initial_memory_over_limit_is_rejected_at_execution() {
        let five = guest("5", EMIT4);
        assert_eq!(validate_module(&five), Ok(()));
        assert_eq!(run_fast(&five), Err(GuestError::MemoryLimitExceeded));
        assert_eq!(run_fast(&guest("4", EMIT4)).unwrap().memory_pages, 4);
        assert_eq!(
            execute(&guest("3", EMIT4), &GuestLimits::HEAVY, &mut ScriptedOracle::default()),
            Err(GuestError::MemoryLimitExceeded)
        );
    }

    #[test]
    fn oversized_tables_are_rejected() {
        let big = wat(r#"(module (memory (export "memory") 1) (table 100000 funcref) (func (export "run")))"#);
        assert_eq!(validate_module(&big), Ok(()));
        assert_eq!(run_fast(&big), Err(GuestError::MemoryLimitExceeded));
        let grow = wat(r#"(module
            (memory (export "memory") 1) (table 1 funcref)
            (func (export "run") (drop (table.grow (ref.null func) (i32.const 70000)))))"#);
        assert_eq!(run_fast(&grow), Err(GuestError::MemoryLimitExceeded));
        let tables = "(table 1 funcref) ".repeat(MAX_TABLES + 1);
        let many = wat(&format!(r#"(module (memory (export "memory") 1) {tables} (func (export "run")))"#));
        assert_eq!(run_fast(&many), Err(GuestError::MemoryLimitExceeded));
    }

    /// `run` that calls oracle_query `n` times on 4 bytes, requires the last answer to be `expect_last`,
    /// then emits.
    fn calling_guest(n: u32, expect_last: i32) -> Vec<u8> {
        guest(
            "1",
            &format!(
                "(local $i i32) (local $r i32)
                 (loop $l
                   (local.set $r (call $query (i32.const 0) (i32.const 4)))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
                 (if (i32.ne (local.get $r) (i32.const {expect_last})) (then unreachable))
                 {EMIT4}"
            ),
        )
    }

    #[test]
    fn oracle_call_limit() {
        let mut oracle = ScriptedOracle::default();
        let run = execute(&calling_guest(32, 0), &GuestLimits::FAST, &mut oracle).unwrap();
        assert_eq!(run.oracle_calls, 32);
        assert_eq!(oracle.seen.len(), 32);

        // The 33rd call gets TOO_MANY_CALLS (the guest checks it), the guest emits, the run still fails.
        let mut oracle = ScriptedOracle::default();
        let error =
            execute(&calling_guest(33, abi_error::TOO_MANY_CALLS), &GuestLimits::FAST, &mut oracle).unwrap_err();
        assert_eq!(error, GuestError::TooManyOracleCalls);
        assert!(error.is_resource_exhausted());
        assert_eq!(oracle.seen.len(), 32);

        let mut oracle = ScriptedOracle::default();
        let error = execute(&calling_guest(9, abi_error::TOO_MANY_CALLS), &GuestLimits::HEAVY, &mut oracle);
        assert_eq!(error, Err(GuestError::TooManyOracleCalls));
        assert_eq!(oracle.seen.len(), 8);
    }

    #[test]
    fn too_many_calls_wins_over_later_failures() {
        // After the over-limit call the guest emits twice: the first violation is reported.
        let wasm = guest(
            "1",
            "(local $i i32)
             (loop $l
               (drop (call $query (i32.const 0) (i32.const 1)))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 40))))
             (drop (call $emit (i32.const 0) (i32.const 1)))
             (drop (call $emit (i32.const 0) (i32.const 1)))",
        );
        assert_eq!(run_fast(&wasm), Err(GuestError::TooManyOracleCalls));
        let wasm = guest("1", "(loop $l (drop (call $query (i32.const 0) (i32.const 1))) (br $l))");
        assert_eq!(run_fast(&wasm), Err(GuestError::TooManyOracleCalls));
    }

    #[test]
    fn oversized_or_negative_submission_gets_bad_length() {
        let wasm = guest(
            "1",
            &format!(
                "(i32.store (i32.const 0) (call $query (i32.const 0) (i32.const {})))
                 (i32.store (i32.const 4) (call $query (i32.const 0) (i32.const -1)))
                 (i32.store (i32.const 8) (call $query (i32.const 0) (i32.const {MAX_PREDICTION_BYTES})))
                 (drop (call $emit (i32.const 0) (i32.const 12)))",
                MAX_PREDICTION_BYTES + 1
            ),
        );
        let mut oracle = ScriptedOracle::new(&[9]);
        let run = execute(&wasm, &GuestLimits::FAST, &mut oracle).unwrap();
        let expected: Vec<u8> =
            [abi_error::BAD_LENGTH, abi_error::BAD_LENGTH, 9].iter().flat_map(|c| c.to_le_bytes()).collect();
        assert_eq!(run.output, expected);
        assert_eq!(run.oracle_calls, 3);
        assert_eq!(oracle.seen.len(), 1);
        assert_eq!(oracle.seen[0].len(), MAX_PREDICTION_BYTES);
    }

    #[test]
    fn oracle_error_codes_reach_the_guest() {
        let wasm = guest("1", &format!("(i32.store (i32.const 0) (call $query (i32.const 0) (i32.const 0))) {EMIT4}"));
        let mut oracle = ScriptedOracle::new(&[abi_error::BAD_PREDICTIONS]);
        let run = execute(&wasm, &GuestLimits::FAST, &mut oracle).unwrap();
        assert_eq!(run.output, abi_error::BAD_PREDICTIONS.to_le_bytes().to_vec());
        assert_eq!(oracle.seen, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn oracle_query_out_of_bounds_traps() {
        for (ptr, len) in [(65535, 2), (65537, 0), (-1, 1), (65000, 1000)] {
            let wasm = guest("1", &format!("(drop (call $query (i32.const {ptr}) (i32.const {len}))) {EMIT4}"));
            let mut oracle = ScriptedOracle::default();
            let error = execute(&wasm, &GuestLimits::FAST, &mut oracle).unwrap_err();
            assert!(matches!(error, GuestError::Trap(_)), "{ptr} {len}: {error:?}");
            assert!(!error.is_resource_exhausted());
            assert!(oracle.seen.is_empty());
        }
        // The last byte of memory, and an empty range at the very end, are in bounds.
        for (ptr, len) in [(65535, 1), (65536, 0)] {
            let wasm = guest("1", &format!("(drop (call $query (i32.const {ptr}) (i32.const {len}))) {EMIT4}"));
            assert_eq!(run_fast(&wasm).unwrap().oracle_calls, 1);
        }
    }

    #[test]
    fn unreachable_traps() {
        let error = run_fast(&guest("1", "unreachable")).unwrap_err();
        assert_eq!(error, GuestError::Trap("wasm `unreachable` instruction executed".into()));
        assert!(!error.is_resource_exhausted());
        // A trap after a successful emit still fails the run.
        assert!(matches!(run_fast(&guest("1", &format!("{EMIT4} unreachable"))), Err(GuestError::Trap(_))));
        let div = guest("1", "(drop (i32.div_u (i32.const 1) (i32.load (i32.const 0))))");
        assert!(matches!(run_fast(&div), Err(GuestError::Trap(_))));
    }

    #[test]
    fn deep_recursion_traps() {
        let wasm = wat(r#"(module (memory (export "memory") 1) (func $f (call $f)) (func (export "run") (call $f)))"#);
        for limits in [GuestLimits::FAST, GuestLimits::HEAVY] {
            let error = execute(&wasm, &limits, &mut ScriptedOracle::default()).unwrap_err();
            assert!(matches!(error, GuestError::Trap(_)), "{error:?}");
        }
    }

    #[test]
    fn data_segment_out_of_bounds_traps() {
        let wasm = wat(r#"(module (memory (export "memory") 1) (data (i32.const 65535) "ab") (func (export "run")))"#);
        assert_eq!(validate_module(&wasm), Ok(()));
        assert!(matches!(run_fast(&wasm), Err(GuestError::Trap(_))));
    }

    #[test]
    fn output_rules() {
        assert_eq!(run_fast(&guest("1", "")), Err(GuestError::NoOutput));
        assert_eq!(run_fast(&guest("1", &format!("{EMIT4} {EMIT4}"))), Err(GuestError::OutputTwice));
        let oob = guest("1", "(drop (call $emit (i32.const 65533) (i32.const 4)))");
        assert!(matches!(run_fast(&oob), Err(GuestError::Trap(_))));
        let too_large = guest("1", &format!("(drop (call $emit (i32.const 0) (i32.const {})))", MAX_OUTPUT_BYTES + 1));
        assert_eq!(run_fast(&too_large), Err(GuestError::OutputTooLarge));
        let negative = guest("1", "(drop (call $emit (i32.const 0) (i32.const -1)))");
        assert_eq!(run_fast(&negative), Err(GuestError::OutputTooLarge));
        let largest = guest("1", &format!("(drop (call $emit (i32.const 0) (i32.const {MAX_OUTPUT_BYTES})))"));
        assert_eq!(run_fast(&largest).unwrap().output, vec![0; MAX_OUTPUT_BYTES]);
        let empty = guest("1", "(if (call $emit (i32.const 0) (i32.const 0)) (then unreachable))");
        assert_eq!(run_fast(&empty).unwrap().output, Vec::<u8>::new());
        for error in [GuestError::NoOutput, GuestError::OutputTwice, GuestError::OutputTooLarge] {
            assert!(!error.is_resource_exhausted());
        }
    }

    #[test]
    fn nan_results_are_canonical() {
        // 0.0 / 0.0 from memory (not a constant): x86 hardware yields 0xffc00000, the deterministic
        // profile yields the canonical 0x7fc00000 everywhere.
        let wasm = guest(
            "1",
            "(f32.store (i32.const 0) (f32.div (f32.load (i32.const 8)) (f32.load (i32.const 8))))
                 (f64.store (i32.const 16) (f64.sqrt (f64.const -1)))
                 (f32.store (i32.const 4) (f32.demote_f64 (f64.load (i32.const 16))))
                 (drop (call $emit (i32.const 0) (i32.const 8)))",
        );
        let run = run_fast(&wasm).unwrap();
        assert_eq!(run.output[..4], 0x7fc0_0000u32.to_le_bytes());
        assert_eq!(run.output[4..], 0x7fc0_0000u32.to_le_bytes());
    }

    #[test]
    fn error_messages_are_short_and_stable() {
        let long = "x".repeat(500);
        let wasm = with_import(&format!(r#"(import "env\n\u{{1b}}[31m" "{long}" (func))"#));
        let error = validate_module(&wasm).unwrap_err();
        let GuestError::DisallowedImport { module, name } = &error else { panic!("{error:?}") };
        assert_eq!(module, "env [31m");
        assert_eq!(name.len(), MAX_NAME_TEXT);
        let message = error.to_string();
        assert!(message.len() <= 150 && !message.chars().any(char::is_control), "{message}");

        let invalid = validate_module(&[0; 100]).unwrap_err().to_string();
        assert!(invalid.starts_with("invalid module: ") && invalid.len() <= 120, "{invalid}");

        let fixed = [
            (GuestError::MissingExport("run"), "missing or mistyped export run"),
            (GuestError::FuelExhausted, "fuel exhausted"),
            (GuestError::MemoryLimitExceeded, "memory limit exceeded"),
            (GuestError::TooManyOracleCalls, "too many oracle calls"),
            (GuestError::NoOutput, "no output emitted"),
            (GuestError::OutputTwice, "output emitted twice"),
            (GuestError::OutputTooLarge, "output too large"),
            (GuestError::Trap("unreachable".into()), "trap: unreachable"),
        ];
        for (error, text) in fixed {
            assert_eq!(error.to_string(), text);
        }
        let boxed: Box<dyn std::error::Error> = Box::new(GuestError::NoOutput);
        assert_eq!(boxed.to_string(), "no output emitted");
    }

    #[test]
    fn lane_constants() {
        assert_eq!(GuestLimits::FAST, GuestLimits { fuel: 1_000_000, memory_pages: 4, max_oracle_calls: 32 });
        assert_eq!(GuestLimits::HEAVY, GuestLimits { fuel: 250_000, memory_pages: 2, max_oracle_calls: 8 });
    }
}
