;; Example claim code: the hypothesis "label i is 1 exactly when i is a multiple of 3".
;; It submits its predictions for the 64 labels of the `demo` holdout once, and emits the
;; oracle bucket it received as its canonical output (one symbol).
(module
  (import "env" "oracle_query" (func $oracle_query (param i32 i32) (result i32)))
  (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")
    (local $i i32)
    (local $bucket i32)
    (block $done
      (loop $fill
        (br_if $done (i32.ge_u (local.get $i) (i32.const 64)))
        (i32.store8 (local.get $i) (i32.eqz (i32.rem_u (local.get $i) (i32.const 3))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $fill)))
    (local.set $bucket (call $oracle_query (i32.const 0) (i32.const 64)))
    (i32.store8 (i32.const 128) (local.get $bucket))
    (drop (call $emit (i32.const 128) (i32.const 1)))))
