"""Files for the programs beside us: Postfix main.cf/master.cf, Dovecot config, the TLS SNI
maps and certificate checks.

May import: config, core. Imported by the CLI, the admin service and the daemon."""
