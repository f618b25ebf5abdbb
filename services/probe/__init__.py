"""The probe: bcc BPF programs from bpf/ feeding raw events to the bus.

Contract for other services:
- output: orjson batches on `eunomia.raw.<node>` (one subject, kernel order); fields per kind in
  shared/schema.py KINDS (decode.py fills them; None where unknown).
- control (request/reply JSON) on `eunomia.ctl.probe.<node>`:
    {"op": "status"}                     -> files, missing_tracepoints, errors, tracepoints,
                                            kinds, excluded_pids, capture, plan, counters
    {"op": "plan", "plan": {...}}        -> {"loaded": summary} (shared/filterplan.py; also
                                            broadcast by the alerter on `eunomia.ctl.probes`)
    {"op": "syscalls", "cgroup_id": N}   -> {"cgroup_id", "syscalls": [nr, ...]}
    {"op": "syscalls_reset", "cgroup_id": N} -> {"cgroup_id", "reset": bool}
  the protocol of shared/control.py: refusals are {"ok": false, "error", "code"},
  counted in ctl_errors_total{code}; requests in ctl_requests_total{op}.
- Stats ("probe"): probe_events_total{kind}, probe_lost_events_total,
  probe_queue_dropped_events_total, probe_decode_errors_total,
  probe_filtered_events_total{kind} (kept in the kernel by the filter plan),
  probe_dedup_repeats_total, probe_flows_active, probe_flows_map_full,
  probe_cgroup_events{cgroup_id,class} (gauge; class exec|file|net; not the
  root cgroup), probe_excluded_pids, probe_tracepoints_missing, plus the
  seccomp_* series of syscall_profile.export().
- Exclusion (services/probe/exclusion.py): decided locally, never over the bus:
  the probe's own process, its children (exclude_children), exclude_pids and
  the processes of exclude_cgroups, each while it lives (pidfd).
"""
