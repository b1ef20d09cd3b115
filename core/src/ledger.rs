//! The conservation ledger of one claim: leaked bits `k` raise the certification barrier
//! `2^k / alpha`, e-values grow the wealth `W`, and the claim certifies once the running
//! maximum `W_max` clears the barrier. Budgets freeze the ledger for good when overrun.
//!
//! Refusals never loosen anything: a malformed charge or e-value is refused without touching
//! the ledger (and without freezing it: a caller bug is not an overrun); an overrun freezes it.

use serde::{Deserialize, Serialize};

/// Default dependence tax τ: each oracle answer is charged τ·log2(N) bits.
pub const DEFAULT_DEPENDENCE_TAX: f64 = 2.0;
/// Smallest admissible dependence tax.
pub const MIN_DEPENDENCE_TAX: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
    /// `alpha` is not finite or not in (0, 1).
    InvalidAlpha,
    /// A budget is negative or not finite.
    InvalidBudget,
    /// The ledger is frozen; nothing changes any more.
    Frozen,
    /// A non-finite or negative input, or a result that would not be finite. Nothing changed.
    NumericGuard,
    /// The charge would overrun a budget. The ledger is now frozen; nothing else changed.
    BudgetExceeded,
    /// Dependence tax τ is not finite or below [`MIN_DEPENDENCE_TAX`].
    InvalidDependenceTax,
    /// `N < 2`.
    InvalidNumSymbols,
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidAlpha => "invalid alpha",
            Self::InvalidBudget => "invalid budget",
            Self::Frozen => "ledger frozen",
            Self::NumericGuard => "numeric guard",
            Self::BudgetExceeded => "budget exceeded",
            Self::InvalidDependenceTax => "invalid dependence tax",
            Self::InvalidNumSymbols => "invalid number of symbols",
        })
    }
}

impl std::error::Error for LedgerError {}

fn valid_alpha(alpha: f64) -> bool {
    alpha.is_finite() && alpha > 0.0 && alpha < 1.0
}

fn valid_budget(budget: Option<f64>) -> bool {
    budget.is_none_or(|b| b.is_finite() && b >= 0.0)
}

fn valid_delta(delta: f64) -> bool {
    delta.is_finite() && delta >= 0.0
}

fn exceeds(total: f64, budget: Option<f64>) -> bool {
    budget.is_some_and(|b| total > b + f64::EPSILON)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub alpha: f64,
    pub k_bits_total: f64,
    pub wealth: f64,
    pub w_max: f64,
    pub access_credit_spent: f64,
    pub k_bits_budget: Option<f64>,
    pub access_credit_budget: Option<f64>,
    pub frozen: bool,
}

impl Ledger {
    /// A fresh ledger: `k = 0`, `W = W_max = 1`, nothing spent, not frozen.
    pub fn new(alpha: f64, k_bits_budget: Option<f64>, access_credit_budget: Option<f64>) -> Result<Self, LedgerError> {
        if !valid_alpha(alpha) {
            return Err(LedgerError::InvalidAlpha);
        }
        if !valid_budget(k_bits_budget) || !valid_budget(access_credit_budget) {
            return Err(LedgerError::InvalidBudget);
        }
        Ok(Self {
            alpha,
            k_bits_total: 0.0,
            wealth: 1.0,
            w_max: 1.0,
            access_credit_spent: 0.0,
            k_bits_budget,
            access_credit_budget,
            frozen: false,
        })
    }

    /// Charges `delta_k` bits and `delta_access` access credit, both or neither.
    ///
    /// Frozen → `Frozen`. Negative or non-finite deltas → `NumericGuard`, ledger untouched and
    /// *not* frozen. Either total overrunning its budget (by more than `f64::EPSILON`) → the
    /// ledger freezes (sticky) and `BudgetExceeded`. A total that would overflow to infinity
    /// without a budget → `NumericGuard`.
    pub fn charge(&mut self, delta_k: f64, delta_access: f64) -> Result<(), LedgerError> {
        if self.frozen {
            return Err(LedgerError::Frozen);
        }
        if !valid_delta(delta_k) || !valid_delta(delta_access) {
            return Err(LedgerError::NumericGuard);
        }
        let k = self.k_bits_total + delta_k;
        let access = self.access_credit_spent + delta_access;
        if exceeds(k, self.k_bits_budget) || exceeds(access, self.access_credit_budget) {
            self.frozen = true;
            return Err(LedgerError::BudgetExceeded);
        }
        if !k.is_finite() || !access.is_finite() {
            return Err(LedgerError::NumericGuard);
        }
        self.k_bits_total = k;
        self.access_credit_spent = access;
        Ok(())
    }

    /// Effective significance level `alpha · 2^(−k)`.
    pub fn alpha_prime(&self) -> f64 {
        self.alpha * (-self.k_bits_total).exp2()
    }

    /// Certification barrier `2^k / alpha`.
    pub fn barrier(&self) -> f64 {
        self.k_bits_total.exp2() / self.alpha
    }

    /// `ln(barrier) = k·ln 2 − ln alpha`, finite where `barrier()` overflows.
    pub fn log_barrier(&self) -> f64 {
        self.k_bits_total * std::f64::consts::LN_2 - self.alpha.ln()
    }

    /// `W ← W·e`, `W_max ← max(W_max, W)`. `e` must be finite and `>= 0`, and the new wealth
    /// finite; otherwise `NumericGuard` and nothing changes. A frozen ledger refuses (`Frozen`):
    /// a frozen claim can never certify, so its wealth stays as it was when it froze.
    pub fn apply_e_value(&mut self, e: f64) -> Result<(), LedgerError> {
        if self.frozen {
            return Err(LedgerError::Frozen);
        }
        if !e.is_finite() || e < 0.0 {
            return Err(LedgerError::NumericGuard);
        }
        let wealth = self.wealth * e;
        if !wealth.is_finite() {
            return Err(LedgerError::NumericGuard);
        }
        self.wealth = wealth;
        self.w_max = self.w_max.max(wealth);
        Ok(())
    }

    /// `!frozen && ln(W_max) >= k·ln 2 − ln alpha`. Fails closed: false whenever alpha, k or
    /// `W_max` is out of its domain (possible only for a hand-built or deserialized ledger) or
    /// either side is not finite.
    pub fn certifies(&self) -> bool {
        if self.frozen || !valid_alpha(self.alpha) {
            return false;
        }
        if !self.k_bits_total.is_finite() || self.k_bits_total < 0.0 {
            return false;
        }
        if !self.w_max.is_finite() || self.w_max <= 0.0 {
            return false;
        }
        let log_wealth = self.w_max.ln();
        let log_barrier = self.log_barrier();
        log_wealth.is_finite() && log_barrier.is_finite() && log_wealth >= log_barrier
    }
}

/// Bits charged for one execution: `τ·log2(N)·max(calls, 1) + k_out`.
///
/// τ must be finite and `>= 2`, `N >= 2`, `k_out` finite and `>= 0`, and the result finite.
pub fn execution_charge(tau: f64, num_symbols: u32, calls: u32, k_out: f64) -> Result<f64, LedgerError> {
    if !tau.is_finite() || tau < MIN_DEPENDENCE_TAX {
        return Err(LedgerError::InvalidDependenceTax);
    }
    if num_symbols < 2 {
        return Err(LedgerError::InvalidNumSymbols);
    }
    if !valid_delta(k_out) {
        return Err(LedgerError::NumericGuard);
    }
    let charge = tau * f64::from(num_symbols).log2() * f64::from(calls.max(1)) + k_out;
    if charge.is_finite() { Ok(charge) } else { Err(LedgerError::NumericGuard) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    #[test]
    fn required_budget_freeze_example() {
        let mut ledger = Ledger::new(0.05, Some(3.0), Some(3.0)).unwrap();
        assert_eq!(ledger.charge(2.0, 2.0), Ok(()));
        assert_eq!(ledger.charge(1.2, 1.2), Err(LedgerError::BudgetExceeded));
        assert!(ledger.frozen);
        assert_eq!(ledger.k_bits_total, 2.0);
        assert_eq!(ledger.access_credit_spent, 2.0);
        // alpha' = 0.05 · 2^-2 = 0.0125; barrier = 2^2 / 0.05 = 80.
        assert!(close(ledger.alpha_prime(), 0.0125), "{}", ledger.alpha_prime());
        assert!(close(ledger.barrier(), 80.0), "{}", ledger.barrier());
        assert!(close(ledger.log_barrier(), 80f64.ln()));
        // Sticky: even a charge that would fit is refused.
        assert_eq!(ledger.charge(0.0, 0.0), Err(LedgerError::Frozen));
        assert_eq!(ledger.apply_e_value(1000.0), Err(LedgerError::Frozen));
        assert!(!ledger.certifies());
    }

    #[test]
    fn each_budget_freezes_on_its_own() {
        let mut ledger = Ledger::new(0.05, Some(3.0), Some(1.0)).unwrap();
        assert_eq!(ledger.charge(0.5, 1.5), Err(LedgerError::BudgetExceeded));
        assert_eq!(ledger.k_bits_total, 0.0);
        assert!(ledger.frozen);
        let mut ledger = Ledger::new(0.05, None, None).unwrap();
        assert_eq!(ledger.charge(1e300, 1e300), Ok(()));
        assert!(!ledger.frozen);
    }

    #[test]
    fn exact_budget_and_epsilon_slack_fit() {
        let mut ledger = Ledger::new(0.1, Some(1.0), None).unwrap();
        assert_eq!(ledger.charge(0.5, 0.0), Ok(()));
        assert_eq!(ledger.charge(0.5 + f64::EPSILON / 2.0, 0.0), Ok(()));
        assert!(!ledger.frozen);
    }

    #[test]
    fn malformed_charges_are_refused_without_freezing() {
        let mut ledger = Ledger::new(0.05, Some(3.0), None).unwrap();
        for (dk, da) in [(-1.0, 0.0), (0.0, -0.5), (f64::NAN, 0.0), (0.0, f64::INFINITY), (f64::NEG_INFINITY, 0.0)] {
            assert_eq!(ledger.charge(dk, da), Err(LedgerError::NumericGuard));
        }
        assert_eq!(ledger, Ledger::new(0.05, Some(3.0), None).unwrap());
        // Overflow to infinity without a budget is refused too.
        let mut ledger = Ledger::new(0.05, None, None).unwrap();
        ledger.charge(f64::MAX, 0.0).unwrap();
        assert_eq!(ledger.charge(f64::MAX, 0.0), Err(LedgerError::NumericGuard));
        assert_eq!(ledger.k_bits_total, f64::MAX);
        assert!(!ledger.frozen);
    }

    #[test]
    fn constructor_validates() {
        for alpha in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(Ledger::new(alpha, None, None), Err(LedgerError::InvalidAlpha));
        }
        for budget in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Ledger::new(0.5, Some(budget), None), Err(LedgerError::InvalidBudget));
            assert_eq!(Ledger::new(0.5, None, Some(budget)), Err(LedgerError::InvalidBudget));
        }
        let ledger = Ledger::new(0.5, Some(0.0), None).unwrap();
        assert_eq!((ledger.wealth, ledger.w_max, ledger.k_bits_total), (1.0, 1.0, 0.0));
    }

    #[test]
    fn wealth_tracks_running_maximum_and_certifies_at_the_barrier() {
        let mut ledger = Ledger::new(0.05, None, None).unwrap();
        ledger.charge(2.0, 0.0).unwrap(); // barrier 80
        ledger.apply_e_value(10.0).unwrap(); // W = 10
        assert!(!ledger.certifies());
        ledger.apply_e_value(8.0).unwrap(); // W = 80 = barrier (up to rounding)
        ledger.apply_e_value(0.5).unwrap(); // W = 40, W_max stays 80
        assert_eq!((ledger.wealth, ledger.w_max), (40.0, 80.0));
        // ln 80 >= 2 ln 2 − ln 0.05 holds only if rounding agrees; use a clear margin instead.
        ledger.apply_e_value(2.1).unwrap(); // W = 84
        assert!(ledger.certifies());
        ledger.apply_e_value(0.0).unwrap(); // W = 0: W_max keeps certifying
        assert_eq!(ledger.wealth, 0.0);
        assert!(ledger.certifies());
    }

    #[test]
    fn malformed_e_values_are_refused() {
        let mut ledger = Ledger::new(0.05, None, None).unwrap();
        for e in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(ledger.apply_e_value(e), Err(LedgerError::NumericGuard));
        }
        ledger.apply_e_value(f64::MAX).unwrap();
        assert_eq!(ledger.apply_e_value(2.0), Err(LedgerError::NumericGuard));
        assert_eq!(ledger.wealth, f64::MAX);
    }

    #[test]
    fn certifies_fails_closed_on_out_of_domain_state() {
        let good = {
            let mut l = Ledger::new(0.05, None, None).unwrap();
            l.apply_e_value(100.0).unwrap();
            l
        };
        assert!(good.certifies());
        let broken = [
            Ledger { alpha: f64::NAN, ..good.clone() },
            Ledger { alpha: 1.0, ..good.clone() },
            Ledger { k_bits_total: f64::NAN, ..good.clone() },
            Ledger { k_bits_total: -1.0, ..good.clone() },
            Ledger { w_max: f64::INFINITY, ..good.clone() },
            Ledger { w_max: f64::NAN, ..good.clone() },
            Ledger { w_max: 0.0, ..good.clone() },
            Ledger { frozen: true, ..good.clone() },
        ];
        for ledger in broken {
            assert!(!ledger.certifies(), "{ledger:?}");
        }
    }

    #[test]
    fn serde_round_trip_and_unknown_fields() {
        let ledger = Ledger::new(0.05, Some(3.0), None).unwrap();
        let json = String::from_utf8(crate::canonical::to_vec(&ledger).unwrap()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"access_credit_budget":null,"access_credit_spent":0.0,"alpha":0.05,"frozen":false,"#,
                r#""k_bits_budget":3.0,"k_bits_total":0.0,"w_max":1.0,"wealth":1.0}"#
            )
        );
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), ledger);
        let extra = json.replacen('{', r#"{"x":1,"#, 1);
        assert!(serde_json::from_str::<Ledger>(&extra).is_err());
    }

    #[test]
    fn execution_charge_formula_and_guards() {
        // 2 · log2(8) · max(0, 1) + 1.5 = 7.5
        assert_eq!(execution_charge(DEFAULT_DEPENDENCE_TAX, 8, 0, 1.5), Ok(7.5));
        // 2 · 3 · 5 + 0 = 30
        assert_eq!(execution_charge(2.0, 8, 5, 0.0), Ok(30.0));
        // 3 · log2(2) · 1 + 0 = 3
        assert_eq!(execution_charge(3.0, 2, 1, 0.0), Ok(3.0));
        assert_eq!(execution_charge(1.99, 8, 1, 0.0), Err(LedgerError::InvalidDependenceTax));
        assert_eq!(execution_charge(f64::NAN, 8, 1, 0.0), Err(LedgerError::InvalidDependenceTax));
        assert_eq!(execution_charge(f64::INFINITY, 8, 1, 0.0), Err(LedgerError::InvalidDependenceTax));
        assert_eq!(execution_charge(2.0, 1, 1, 0.0), Err(LedgerError::InvalidNumSymbols));
        assert_eq!(execution_charge(2.0, 8, 1, -1.0), Err(LedgerError::NumericGuard));
        assert_eq!(execution_charge(2.0, 8, 1, f64::NAN), Err(LedgerError::NumericGuard));
        assert_eq!(execution_charge(f64::MAX, 8, 2, 0.0), Err(LedgerError::NumericGuard));
        assert_eq!(LedgerError::BudgetExceeded.to_string(), "budget exceeded");
    }

    fn any_delta() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..2.0,
            1 => Just(-1.0),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(0.0),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Charge(f64, f64),
        Evalue(f64),
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any_delta(), any_delta()).prop_map(|(k, a)| Op::Charge(k, a)),
            1 => prop_oneof![0.0f64..10.0, Just(f64::NAN), Just(-1.0)].prop_map(Op::Evalue),
        ]
    }

    fn apply(ledger: &mut Ledger, op: &Op) -> Result<(), LedgerError> {
        match *op {
            Op::Charge(k, a) => ledger.charge(k, a),
            Op::Evalue(e) => ledger.apply_e_value(e),
        }
    }

    proptest! {
        #[test]
        fn k_never_decreases(ops in proptest::collection::vec(any_op(), 0..40), budget in proptest::option::of(0.0f64..20.0)) {
            let mut ledger = Ledger::new(0.05, budget, budget).unwrap();
            for op in &ops {
                let before = ledger.k_bits_total;
                let _ = apply(&mut ledger, op);
                prop_assert!(ledger.k_bits_total >= before);
            }
        }

        #[test]
        fn frozen_is_sticky(ops in proptest::collection::vec(any_op(), 0..40), budget in 0.0f64..5.0) {
            let mut ledger = Ledger::new(0.05, Some(budget), Some(budget)).unwrap();
            for op in &ops {
                let was_frozen = ledger.frozen;
                let before = ledger.clone();
                let result = apply(&mut ledger, op);
                if was_frozen {
                    prop_assert_eq!(result, Err(LedgerError::Frozen));
                    prop_assert_eq!(&ledger, &before);
                }
                if result == Err(LedgerError::BudgetExceeded) {
                    prop_assert!(ledger.frozen);
                    prop_assert_eq!(&ledger, &Ledger { frozen: true, ..before });
                }
            }
        }

        #[test]
        fn charges_that_fit_succeed_and_sum_exactly(deltas in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..30)) {
            let (k_sum, a_sum) = deltas.iter().fold((0.0, 0.0), |(k, a), (dk, da)| (k + dk, a + da));
            let mut ledger = Ledger::new(0.05, Some(k_sum), Some(a_sum)).unwrap();
            for &(dk, da) in &deltas {
                prop_assert_eq!(ledger.charge(dk, da), Ok(()));
            }
            prop_assert!(!ledger.frozen);
            prop_assert_eq!(ledger.k_bits_total, k_sum);
            prop_assert_eq!(ledger.access_credit_spent, a_sum);
        }

        #[test]
        fn certifies_is_monotone_in_w_max(alpha in 0.001f64..0.999, k in 0.0f64..50.0, w1 in 0.0f64..1e18, factor in 1.0f64..1e3) {
            let mut ledger = Ledger::new(alpha, None, None).unwrap();
            ledger.charge(k, 0.0).unwrap();
            let low = Ledger { w_max: w1, ..ledger.clone() };
            let high = Ledger { w_max: w1 * factor, ..ledger };
            prop_assert!(!low.certifies() || high.certifies());
        }

        #[test]
        fn w_max_is_the_running_maximum(es in proptest::collection::vec(0.0f64..4.0, 0..30)) {
            let mut ledger = Ledger::new(0.05, None, None).unwrap();
            let (mut w, mut w_max) = (1.0f64, 1.0f64);
            for &e in &es {
                ledger.apply_e_value(e).unwrap();
                w *= e;
                w_max = w_max.max(w);
            }
            prop_assert_eq!(ledger.wealth, w);
            prop_assert_eq!(ledger.w_max, w_max);
        }
    }
}
