"""Dollar budgets and exact token quotas: configuration, periods, the ledger, admission and settlement.

The proxy admits (`BudgetKeeper.admit`, before forwarding); the parser settles (`BudgetKeeper.settle`,
where the usage record is made). The ledgers live in a `BudgetStore` shared by every instance.
"""
