"""The daemon: configuration, the receive loop, the durable writer, the control
server, scheduled jobs, status, Prometheus metrics, rules reload and sd_notify.
"""
