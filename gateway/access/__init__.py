"""Who may call, and how much: client keys, rate and token limits, spend budgets."""
