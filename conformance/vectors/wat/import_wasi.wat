;; Claim code importing from a module other than "env" (WASI's fd_write): the kernel refuses to
;; commit it, so claim code cannot reach anything but the oracle ABI.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run")))
