"""Console pages of runs and steps: the inbox (`inbox`), a step and its decision form (`steps`,
`schema_forms`), a run and the runs list (`pages`), starting one (`start`), its input and files
(`request`, `attachments`)."""
