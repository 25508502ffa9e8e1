"""Running the services: logs, idle timers, sd_notify, worker processes, the daemon.

`daemon` and `workers` compose the services (through `mailpolicy.services`); the other
modules (logs, timers, sdnotify, service) are a layer the services may import.
May import: config, core, store, deploy; daemon/workers also `mailpolicy.services`."""
