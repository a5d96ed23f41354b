"""ops: what runs beside the worker for people: the demo and the SMTP sink.

Owns `settlewatch demo` (`demo`: the local stack, the worker, the simulator and findings in the
terminal) and a real SMTP server that keeps mails as files (`smtpsink`, `settlewatch
smtp-sink`). It may import every room below it (`live`, `audit`, `sim`, `wire`, `core`);
never `bench` or the CLI.
"""
