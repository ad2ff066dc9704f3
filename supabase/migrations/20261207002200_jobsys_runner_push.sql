-- jobsys: issue 24, item 6: AI batch runners on Supabase receive the jobsys:runners topic
-- (background_job_queued / background_job_cancelled, batch ids only) through Realtime
-- Authorization, so they claim on push instead of polling. Workers and operators still may not.

-- Whether the caller may receive the Broadcast messages of this topic.
create or replace function jobsys.may_receive(p_topic text) returns boolean
  language sql stable security definer
  set search_path = jobsys, pg_temp
  as $$
  select case
    when p_topic = 'jobsys:dashboard' then jobsys.caller_role() in ('operator', 'service')
    when p_topic = 'jobsys:runners' then jobsys.caller_role() in ('runner', 'service')
    when p_topic like 'jobsys:worker:%' then
      jobsys.caller_role() = 'service'
      or jobsys.is_own_worker(jobsys.try_uuid(substr(p_topic, length('jobsys:worker:') + 1)))
    else false
  end
$$;
comment on function jobsys.may_receive(text) is
  'Realtime Authorization: jobsys:dashboard for operators, jobsys:runners for AI batch runners (batch ids only; the runner claims through the database), jobsys:worker:<uuid> only for the worker user that registered that session.';
