-- jobsys: a comment on every table and function, saying why it is there. The declarative
-- schema (supabase/schemas/) keeps each next to its object; this migration brings databases
-- made by the earlier migrations to the same catalog (tests/core/test_schema_catalog.py).

-- 00_roles_and_auth.sql
comment on schema jobsys is
  'jobsys: device jobs and AI batch jobs. Every state change is one function here, so the database is the single source of truth.';

-- 10_tables.sql
comment on table jobsys.settings is
  'Tunables read by the functions (units in the key names). Tests shorten them; operators rarely need to.';
comment on table jobsys.maintenance_state is
  'One row: when jobsys.maintain() last ran, so periodic work runs once per interval however many workers call it.';
comment on table jobsys.workers is
  'One row per worker process session: every registration starts a new session, and a worker acts only as a session it registered.';
comment on table jobsys.devices is
  'Android devices, stable by serial, re-bound to whichever worker session registers them. The row is the per-device mutex: a claim sets running_assignment_id under its lock.';
comment on table jobsys.jobs is
  'Device jobs: open a URL on all, a percentage or a number of the healthy devices for duration_sec. The counters are exact, changed only by jobsys.apply_counts in the transaction of each transition.';
comment on table jobsys.job_assignments is
  'One run of one job on one device, leased to the worker that claimed it. job_id and device_id are references kept by statement-level triggers, not declared foreign keys.';
comment on table jobsys.background_jobs is
  'AI batch jobs: one prompt template over up to 10,000 items, held by one runner at a time under a lease. The counters change only in jobsys.apply_background_counts.';
comment on table jobsys.background_job_items is
  'The items of a background job, claimed in batches under the job lease token; a result counts only while the item is running under that token.';
comment on table jobsys.background_job_logs is
  'Insert-only log of a background job (created, claimed, taken over, failed items, finished), read newest first.';

-- 15_referential_integrity.sql
comment on function jobsys.raise_missing_reference(text, text, text, text, text) is
  'Raises the error a declared foreign key raises (SQLSTATE 23503, same message and detail), for the triggers that stand in for foreign keys.';
comment on function jobsys.assignments_check_parents() is
  'Insert trigger standing in for the job_id and device_id foreign keys of job_assignments, once per statement: jobs are locked FOR KEY SHARE, devices only checked, so a 10,000-device fan-out takes no lock per device (devices_cascade_delete waits instead).';
comment on function jobsys.assignment_check_moved_parents() is
  'Update trigger: nothing in jobsys moves an assignment to another job or device; if anything does, the new parents are checked as on insert.';
comment on function jobsys.device_check_running_assignment() is
  'Stands in for a foreign key on devices.running_assignment_id: a device''s running assignment must be one of its own assignments.';
comment on function jobsys.jobs_cascade_delete() is
  'Deleting jobs deletes their assignments, as on delete cascade would; each statement of a trigger takes a fresh snapshot, as a foreign-key action does.';
comment on function jobsys.devices_cascade_delete() is
  'Deleting devices deletes their assignments, after a SHARE ROW EXCLUSIVE lock on job_assignments: it waits for any fan-out in flight and then deletes what that fan-out committed too.';
comment on function jobsys.assignments_free_devices() is
  'Deleting assignments frees the devices that were running them, as on delete set null on devices.running_assignment_id would.';
comment on function jobsys.refuse_referenced_key_change() is
  'Refuses to change a jobs or devices id that assignments reference, as a foreign key would (ids are generated and never change).';

-- 20_events_and_auth.sql
comment on function jobsys.setting(text) is
  'The value of one tunable in jobsys.settings.';
comment on function jobsys.emit(text, text, jsonb) is
  'The one way events leave the database: pg_notify on the topic (the channel is the topic itself) and, on Supabase, the same message through Realtime Broadcast on a private channel.';
comment on function jobsys.worker_topic(uuid) is
  'The push topic of one worker session: jobsys:worker:<worker uuid>.';
comment on function jobsys.raise_error(text, text, jsonb) is
  'Raises one of the stable SQLSTATEs the library maps to typed exceptions (jobsys/errors.py): JS400 invalid input, JS403 forbidden, JS404 not found, JS409 illegal transition, JS410 stale.';
comment on function jobsys.caller_role() is
  'Who is calling: service (a trusted direct connection or the service role), operator or worker (app_metadata.jobsys_role of the Supabase JWT), else anon. Read from the role setting PostgREST sets, because the functions run as security definer.';
comment on function jobsys.require_operator() is
  'Raises JS403 unless the caller is an operator or the service.';
comment on function jobsys.require_signed_in() is
  'Raises JS403 for anon: upkeep (lease rescue, stale marking, top-up) is harmless for anyone signed in, and workers run it from their heartbeats.';
comment on function jobsys.require_worker(uuid) is
  'Raises JS403 unless the caller is the service or the worker user that registered this worker session: a worker acts only as itself.';
comment on function jobsys.healthy_cutoff() is
  'Healthy and connected means a heartbeat after this instant (now - stale_after_sec) and state online.';

-- 30_device_jobs.sql
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API.';
comment on function jobsys.progress_json(jobsys.jobs) is
  'The payload of the job_progress event: the job status and its counters.';
comment on function jobsys.job_workers(uuid) is
  'The workers that hold any assignment of a job, to tell them about pause, resume, cancel and delete.';
comment on function jobsys.emit_to_job_workers(uuid, text, jsonb) is
  'Sends one event to every worker that holds an assignment of the job.';
comment on function jobsys.apply_counts(uuid, integer, integer, integer, integer, integer, boolean) is
  'The one place job counters change (the caller holds the job row lock). Completes the job when completed reaches target, cancelling what is still queued, and emits job_progress, throttled per job.';
comment on function jobsys.assign_devices(uuid, integer, integer) is
  'Fans a job out to up to p_limit eligible devices (healthy, never tried for this job), idle first, then the least loaded, with one push per worker. The caller holds the job row lock and applies the counters.';
comment on function jobsys.top_up(uuid) is
  'While an active job has fewer live or completed assignments than its target, assigns newly eligible devices; a null p_job_id means every short active job.';
comment on function jobsys.check_title(text) is
  'Checks and trims a title (1-200 characters, no control characters) or raises JS400; shared by create and edit.';
comment on function jobsys.title_from_url(text) is
  'Default job title: host and path of the URL, at most 200 characters.';
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected.';
comment on function jobsys.lock_job(uuid) is
  'Locks a job row for a transition (FOR NO KEY UPDATE) or raises JS404.';
comment on function jobsys.illegal_move(jobsys.jobs, text) is
  'Raises JS409 for a transition the job status does not allow.';
comment on function jobsys.pause_job(uuid) is
  'Operators: pause a job. Queued runs wait; running ones finish.';
comment on function jobsys.resume_job(uuid) is
  'Operators: resume a paused job. Its runs are pending again (their devices queue floors come down to them) and devices that came while it was paused are assigned.';
comment on function jobsys.cancel_job(uuid) is
  'Operators: cancel a job. Everything not finished is cancelled now and the workers stop what is running.';
comment on function jobsys.delete_job(uuid) is
  'Operators: delete a job and its assignments; workers are told before the rows that name them are gone.';
comment on function jobsys.update_job_title(uuid, text) is
  'Operators: rename a job (title checked as on create).';
comment on function jobsys.device_status(jobsys.devices, timestamp with time zone) is
  'The status the dashboard shows for a device: disabled, error, offline, busy or idle. p_cutoff is jobsys.healthy_cutoff(), computed once by the caller.';
comment on function jobsys.list_jobs(text, text, integer, integer) is
  'Operators: a page of jobs, newest first, with counts per status. p_q searches title and URL for the text as typed (case-insensitive; % and _ are not wildcards).';
comment on function jobsys.get_job(uuid) is
  'Operators: one job with its assignments.';
comment on function jobsys.list_devices() is
  'Operators: every device with its status, worker and current job, with counts per status.';

-- 35_device_runs.sql
comment on function jobsys.requeue_status(text, integer, integer) is
  'Where an assignment goes when its run ends without a result: back to the queue while attempts remain (paused if the job is paused), failed after the last attempt, cancelled if the job is over.';
comment on function jobsys.claim_assignments(uuid, uuid[], integer, boolean) is
  'Workers: claim for each free online device of the worker (or those listed) its oldest pending assignment, from the device queue floor up; p_start starts the runs at once. Locks the jobs first, then SKIP LOCKED on assignments and devices, so a claim never waits on another claim.';
comment on function jobsys.assignment_for_worker(bigint) is
  'Looks up an assignment for a worker-side transition and checks that the caller may act as the worker that holds it.';
comment on function jobsys.raise_stale(bigint, integer) is
  'Raises JS410: the run this worker holds has moved on (lease expired and re-queued, job cancelled or deleted).';
comment on function jobsys.start_assignment(bigint, integer) is
  'Workers: the device began the action; the lease now covers its duration plus lease_grace_sec.';
comment on function jobsys.check_run_reports(jsonb) is
  'Checks a batch of run reports for finish_assignments (shape, outcome, an error for failed and retry) and raises JS400 before anything changes.';
comment on function jobsys.finish_runs(uuid, jsonb) is
  'Finishes runs of one worker in one transaction, with one counter update per job. Compare-and-set on worker, status and attempt, so a late report after a rescue never counts twice: it comes back as stale.';
comment on function jobsys.finish_assignments(uuid, jsonb) is
  'Workers: finish many runs in one call (completed, failed, retry or release), in one transaction with one counter update per job.';
comment on function jobsys.finish_run(bigint, integer, text, jsonb, text) is
  'The single-run calls (complete, fail, release) on the code of finish_runs; a run that has moved on raises JS410 here.';
comment on function jobsys.run_json(jobsys.job_assignments) is
  'The JSON shape of one run returned to workers.';
comment on function jobsys.complete_assignment(bigint, integer, jsonb) is
  'Workers: a run completed. plpgsql rather than SQL, so its plans are kept for the session.';
comment on function jobsys.fail_assignment(bigint, integer, text, boolean, jsonb) is
  'Workers: a run failed; p_retry re-queues it on the same device while attempts remain.';
comment on function jobsys.release_assignment(bigint, integer, text) is
  'Workers: hand back a run the worker will not finish (graceful shutdown); it goes back to the queue.';
comment on function jobsys.rescue_expired_leases() is
  'An expired lease returns the run to the queue with attempt + 1 (failed after the last attempt, then replaced by top-up). Compare-and-set on status and attempt.';
comment on function jobsys.release_unhealthy_queues() is
  'Pending and paused runs on unhealthy devices are removed so that top-up can place them on healthy devices; a device may be chosen again once healthy.';
comment on function jobsys.mark_stale() is
  'Workers and devices whose heartbeat is older than stale_after_sec become offline.';
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, top-up, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';
comment on function jobsys.sync_devices(uuid, jsonb) is
  'Brings the worker device list in line with what it reports. Runs an earlier session held on these devices go back to the queue, and only those free their device, so no device ever runs two.';
comment on function jobsys.register_worker(text, text, jsonb) is
  'Workers: start a worker session (as the signed-in worker user) and register its devices.';
comment on function jobsys.heartbeat(uuid, jsonb, bigint[]) is
  'Workers: the worker and its devices are alive, running leases are extended, and maintenance runs. Returns the runs the worker must stop: the polling path for cancellation when push is down.';
comment on function jobsys.stop_worker(uuid) is
  'Workers: a clean stop. The devices go offline and their queues move elsewhere.';
comment on function jobsys.worker_devices(uuid) is
  'Workers: the devices bound to this worker session, so it can claim by device id.';

-- 40_background_jobs.sql
comment on function jobsys.require_runner() is
  'Raises JS403 unless the caller is a batch runner (worker role or the service).';
comment on function jobsys.background_job_json(jobsys.background_jobs) is
  'The JSON shape of a background job in the API.';
comment on function jobsys.background_progress_json(jobsys.background_jobs) is
  'The payload of background_job_progress: enough for a progress monitor without a read.';
comment on function jobsys.background_log(uuid, text, text, jsonb) is
  'Appends one line to the log of a background job (message cut at 4000 characters).';
comment on function jobsys.batch_lease_interval() is
  'How long a runner holds a claimed background job past its last heartbeat (batch_lease_sec).';
comment on function jobsys.lock_background_job(uuid) is
  'Locks a background job row for a transition or raises JS404.';
comment on function jobsys.held_background_job(uuid, uuid) is
  'The job, locked, if the lease of the caller is current; else JS410 (cancelled, taken over, finished), which tells the runner to drop the job and count nothing more.';
comment on function jobsys.apply_background_counts(uuid, integer, integer, integer, integer, boolean) is
  'The one place background job counters change (the caller holds the job row lock). A running job whose items are all final finishes here; background_job_progress is throttled per job.';
comment on function jobsys.template_placeholders(text) is
  'The placeholders of a template: plain {name} fields, {{ and }} for literal braces, anything else refused with JS400. Mirrors jobsys/batch/template.py.';
comment on function jobsys.check_ai_batch(jsonb, jsonb) is
  'Checks an ai_batch payload and its items; returns the normalised payload or raises JS400, so nothing is stored.';
comment on function jobsys.create_background_job(jsonb, jsonb, text, integer, integer, text) is
  'Operators: create an AI batch job and its items; runners are told by push.';
comment on function jobsys.cancel_background_job(uuid) is
  'Operators: cancel a background job. Every unfinished item is cancelled now and the runner is told, so late results of its in-flight calls no longer count.';
comment on function jobsys.retry_background_job(uuid) is
  'Operators: retry a finished job. Only the failed items go back to the queue; completed outputs stay.';
comment on function jobsys.claim_background_job(text) is
  'Runners: claim one job with a lease, a running job whose lease expired (taken over) before the oldest pending one. SKIP LOCKED, so two runners never wait on each other; null when there is none.';
comment on function jobsys.claim_background_items(uuid, uuid, integer) is
  'Runners: claim up to p_limit pending items of a held job, in index order, and extend the lease.';
comment on function jobsys.report_background_items(uuid, uuid, jsonb, jsonb) is
  'Runners: record item results with compare-and-set on the lease token, so a runner that lost the job changes nothing (JS410) and a repeated result comes back as stale.';
comment on function jobsys.renew_background_leases(text, uuid[]) is
  'Runners: heartbeat. Extends the leases still held, sends their trailing progress events and returns the tokens no longer held: the polling path for cancellation when push is down.';
comment on function jobsys.finish_background_job(uuid, uuid, text) is
  'Runners: finish a held job. With p_error, a job-level failure (no API key, unknown model, quota) fails every unfinished item, so a retry after the fix runs exactly those.';
comment on function jobsys.release_background_job(uuid, uuid, text) is
  'Runners: a runner shutting down hands the job back; its unfinished items and the job go back to pending for the next runner.';
comment on function jobsys.list_background_jobs(text, integer, integer) is
  'Operators: a page of background jobs, newest first, with counts per status.';
comment on function jobsys.get_background_job(uuid) is
  'Operators: one background job.';
comment on function jobsys.list_background_job_logs(uuid, integer, bigint) is
  'Operators: the log of a job, newest first, paged by id (pass the previous page next_before_id).';
comment on function jobsys.list_background_job_items(uuid, text, integer, integer) is
  'Operators: a page of the items of a job in index order, optionally of one status.';

-- 50_access.sql
comment on function jobsys.is_own_worker(uuid) is
  'Whether the calling worker user owns this worker session; used by the RLS policies and the Realtime and Storage rules.';

-- 60_realtime_and_storage.sql
comment on function jobsys.try_uuid(text) is
  'The text as a uuid, or null when it is not one: topic and object names come from clients.';
comment on function jobsys.may_receive(text) is
  'Realtime Authorization: jobsys:dashboard for operators, jobsys:worker:<uuid> only for the worker user that registered that session.';
comment on function jobsys.may_write_evidence(text) is
  'Storage: evidence objects live at <worker uuid>/<file>; a worker writes only under its own worker sessions.';
