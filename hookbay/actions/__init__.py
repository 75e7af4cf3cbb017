"""Actions run after parsing: one module per action type behind a registry, the planner, conditions, delivery retry policy and the outbound destination guard."""
