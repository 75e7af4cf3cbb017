"""Actions run after parsing: conditions, delivery retry policy and the outbound destination guard."""
