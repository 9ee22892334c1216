"""Run routes: start (`starts`, exactly once), read one (`detail`, with each step's history from
`history`), list (`listing`), the input read back from Temporal (`run_input`), cancel (`cancel`)."""
