;; Claim code that asks the oracle once (64 zero predictions) and then traps: what it saw is
;; charged even though it produces no output.
(module
  (import "env" "oracle_query" (func $oracle_query (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $oracle_query (i32.const 0) (i32.const 64)))
    unreachable))
