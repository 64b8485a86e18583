"""Parts shared by the experiment files of configs/: the loop and optimizer (`loop`) and
`config.data` sections (`data`)."""
