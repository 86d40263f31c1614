"""Open-loop load: arrival schedules, operation mixes, the generator and its targets."""
