-- Queries the benchmarks send themselves: setup, checks, and the baselines.
-- jobsys is always measured through its library (jobsys.system.JobSystem), never here.

-- Setup and checks ---------------------------------------------------------------------

-- name: vacuum_analyze
-- Reclaim dead rows between runs, so every timed run starts from the same table state.
vacuum analyze;

-- name: stale_after_sec
-- The health window the baseline applies itself (jobsys applies it inside its functions).
select value::float8 from jobsys.settings where key = 'stale_after_sec';

-- name: job_counts
-- A job's stored counter next to the real number of rows (checked after every run).
select j.assigned_count, (select count(*) from jobsys.job_assignments a where a.job_id = j.id)
from jobsys.jobs j where j.id = %(job_id)s;

-- name: delete_all_jobs
-- Clean up between runs (untimed); assignments go with their job.
delete from jobsys.jobs;

-- name: settings_update
-- Tune a jobsys setting for a benchmark scenario.
update jobsys.settings set value = %(value)s where key = %(key)s;

-- name: lifecycle_completed
-- Completed runs so far, to check that every counted cycle really completed.
select count(*) from jobsys.job_assignments where status = 'completed';

-- name: lifecycle_counters_off
-- Jobs whose exact counters (the row plus job_run_counts) differ from count(*) (must be none after a run).
select count(*) from jobsys.jobs s cross join lateral jobsys.counted(s) j
where (j.assigned_count, j.running_count, j.completed_count, j.failed_count, j.cancelled_count)
   <> (select count(*), count(*) filter (where a.status = 'running'), count(*) filter (where a.status = 'completed'),
              count(*) filter (where a.status = 'failed'), count(*) filter (where a.status = 'cancelled')
       from jobsys.job_assignments a where a.job_id = j.id);

-- Baseline: the original plan's fan-out (spec section 8) -------------------------------
-- An API inserts the job; a JobDistributor selects the idle devices into the application,
-- bulk-inserts the assignments, updates the job's counters, then emits one push per
-- assignment. Run against jobsys's own tables so both sides write the same rows.

-- name: plan_idle_devices
-- The distributor's device query: idle (nothing running), online, fresh heartbeat.
select d.id, d.worker_id
from jobsys.devices d
where d.state = 'online' and d.worker_id is not null and d.running_assignment_id is null
  and d.last_heartbeat_at > now() - make_interval(secs => %(stale_after_sec)s);

-- name: plan_insert_job
-- The API's insert of the job row, target resolved from the devices just selected.
insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_count, max_attempts)
values (%(title)s, 'open_url', %(target_url)s, %(duration_sec)s, 'all_devices', %(target_count)s, 3)
returning id;

-- name: plan_copy_assignments
-- Bulk insert of the assignment rows (COPY: the fastest bulk path Postgres has).
copy jobsys.job_assignments (job_id, device_id) from stdin;

-- name: plan_set_counters
-- The distributor records how many it assigned.
update jobsys.jobs set assigned_count = assigned_count + %(assigned)s, updated_at = now()
where id = %(job_id)s;

-- name: plan_push
-- One push per assignment (Socket.io `job:assign` in the plan; pg_notify here).
select pg_notify(%(topic)s, %(message)s);

-- Floor: what storing one job's rows costs alone ------------------------------------------
-- name: floor_without_triggers
-- Reference checks and every other trigger off, for this transaction only (superuser).
set local session_replication_role = replica;

-- name: floor_insert_assignments
-- The rows a fan-out to every device stores, in one INSERT ... SELECT: no health check, no
-- counters, no pushes, no reference check. The table and its indexes, nothing else.
insert into jobsys.job_assignments (job_id, device_id)
select %(job_id)s, d.id from jobsys.devices d order by d.id;

-- Baseline: the naive queue of CALIBRATION.md -----------------------------------------
-- A minimal SKIP LOCKED claim and a completion that bumps one counter row per job (and, in
-- one variant, a bare start step between them). No device mutex, no leases, no events.

-- name: naive_schema
-- Its own two tables, in the same database as jobsys.
create schema if not exists bench_naive;
create table bench_naive.jobs (id integer primary key, completed_count integer not null default 0);
create table bench_naive.tasks (
  id bigint generated always as identity primary key,
  job_id integer not null,
  status text not null default 'pending',
  worker text,
  claimed_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz);
create index tasks_pending_idx on bench_naive.tasks (id) where status = 'pending';

-- name: naive_fill
-- The same shape as jobsys's set: `jobs` jobs of `per_job` tasks each, oldest job first.
with new_jobs as (
  insert into bench_naive.jobs (id) select g from generate_series(1, %(jobs)s) g returning id)
insert into bench_naive.tasks (job_id)
select j.id from new_jobs j, generate_series(1, %(per_job)s) order by j.id;

-- name: naive_claim
-- Claim the oldest pending task.
update bench_naive.tasks t set status = 'running', worker = %(worker)s, claimed_at = now()
where t.id = (select id from bench_naive.tasks where status = 'pending'
              order by id limit 1 for update skip locked)
returning t.id, t.job_id;

-- name: naive_start
-- The start step of the three-statement variant (claim, start, complete), which makes as
-- many transactions per cycle as jobsys's one call per transition.
update bench_naive.tasks set started_at = now() where id = %(task_id)s and status = 'running';

-- name: naive_complete
-- Complete it and bump its job's counter, in one statement.
with done as (
  update bench_naive.tasks set status = 'completed', finished_at = now()
  where id = %(task_id)s and status = 'running'
  returning job_id)
update bench_naive.jobs j set completed_count = j.completed_count + 1
from done where j.id = done.job_id;

-- name: naive_completed
-- Completed tasks so far (checked after every run).
select count(*), (select sum(completed_count) from bench_naive.jobs)
from bench_naive.tasks where status = 'completed';

-- Worker benchmarks (bench/worker_*.py) ------------------------------------------------

-- name: worker_runs_started
-- Runs of a job that their device has begun (running, started).
select count(*) from jobsys.job_assignments
where job_id = %(job_id)s and status = 'running' and started_at is not null;

-- name: worker_run_holder
-- The worker session holding a job's running runs (the one to kill).
select a.worker_id, count(*) from jobsys.job_assignments a
where a.job_id = %(job_id)s and a.status = 'running'
group by a.worker_id order by count(*) desc limit 1;

-- name: worker_recovery
-- After a worker session died: the job's runs queued or running again on a live session's
-- devices (or completed there), and the runs completed.
select count(*) filter (where a.status in ('pending', 'running', 'completed')
                          and d.worker_id is distinct from %(dead)s),
       count(*) filter (where a.status = 'completed')
from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
where a.job_id = %(job_id)s;

-- name: worker_online_devices
-- Online devices of the live session(s) of a worker name.
select count(*) from jobsys.devices d join jobsys.workers w on w.id = d.worker_id
where w.name = %(name)s and w.status = 'online' and d.state = 'online';

-- Procrastinate, the peer (bench/procrastinate_peer.py) ---------------------------------
-- Reads of Procrastinate's own tables, in its own database; it makes every change itself.

-- name: peer_listening
-- Sessions of one Procrastinate worker process (its application_name) that have run LISTEN.
select count(*) from pg_stat_activity
where datname = current_database() and application_name = %(name)s and query ilike 'listen %%';

-- name: peer_job_status
-- One job's status.
select status::text from procrastinate_jobs where id = %(id)s;

-- name: peer_succeeded
-- Jobs finished successfully so far.
select count(*) from procrastinate_jobs where status = 'succeeded';

-- name: peer_doing
-- Of the given jobs: how many are running, the (lowest) worker running them, and how many workers.
select count(*), min(worker_id), count(distinct worker_id)
from procrastinate_jobs where id = any(%(ids)s) and status = 'doing';

-- name: peer_recovery
-- After a worker died: the jobs no longer running on it (queued again, running elsewhere or
-- finished), and the jobs finished.
select count(*) filter (where status <> 'doing' or worker_id is distinct from %(dead)s),
       count(*) filter (where status = 'succeeded')
from procrastinate_jobs where id = any(%(ids)s);

-- name: floor_claim_runs
-- The storage floor of one job's claims (worker_push): every run of the job set running, as
-- claims with start=true leave them, in one bare UPDATE (the caller rolls it back).
update jobsys.job_assignments a set status = 'running', worker_id = d.worker_id, claimed_at = now(),
  started_at = now(), lease_expires_at = now() + interval '1 minute'
from jobsys.devices d where a.job_id = %(job_id)s and d.id = a.device_id;

-- name: floor_claim_devices
-- ... and every device pointed at its run (its reference check runs, as it does for a claim).
update jobsys.devices d set running_assignment_id = a.id, queue_floor = a.id
from jobsys.job_assignments a where a.job_id = %(job_id)s and a.device_id = d.id;

-- name: pending_runs_per_worker
-- Runs queued on each worker session's devices: what its client works off in a timed run.
select d.worker_id, count(*) from jobsys.job_assignments a
join jobsys.devices d on d.id = a.device_id
where a.status = 'pending' group by d.worker_id;
