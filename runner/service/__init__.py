"""runner as a service: queued runs (`runner submit`), workers that claim and drive them
(`runner worker`), and the HTTP intake (`runner serve`). Every piece works through the
run store: PostgreSQL does the locking and the durability; runner adds no coordination
of its own."""
