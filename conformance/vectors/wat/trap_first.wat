;; Claim code that fails before asking the oracle anything: it traps at once.
(module
  (memory (export "memory") 1)
  (func (export "run") unreachable))
