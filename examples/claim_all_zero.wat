;; Example claim code with no real hypothesis: it predicts 0 for all 64 labels.
(module
  (import "env" "oracle_query" (func $oracle_query (param i32 i32) (result i32)))
  (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (i32.store8 (i32.const 128) (call $oracle_query (i32.const 0) (i32.const 64)))
    (drop (call $emit (i32.const 128) (i32.const 1)))))
