"""The PC worker process: devices, heartbeat, push subscription + polling, execution."""
