-- The minimal shape of Supabase's `realtime` schema that jobsys relies on, for plain
-- Postgres in tests. Columns, realtime.topic() and realtime.send() follow supabase/realtime's
-- own migrations; realtime.messages is not partitioned here. The trigger at the end is
-- ours: it stands in for Realtime's logical replication of realtime.messages, so the
-- Realtime double can deliver what realtime.send() stored once it commits.
create schema if not exists realtime;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
);
alter table realtime.messages enable row level security;

grant usage on schema realtime to anon, authenticated, service_role;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;

create or replace function realtime.topic() returns text
  language sql stable
  as $$ select nullif(current_setting('realtime.topic', true), '')::text $$;

create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
  returns void
  language plpgsql
  as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
  end;
end
$$;

create or replace function realtime.test_double_replicate() returns trigger
  language plpgsql
  as $$
begin
  if new.extension = 'broadcast' and new.event is not null then
    perform pg_notify('realtime_test_double', jsonb_build_object(
      'topic', new.topic, 'event', new.event, 'payload', new.payload, 'private', new.private)::text);
  end if;
  return new;
end
$$;

drop trigger if exists test_double_replicate on realtime.messages;
create trigger test_double_replicate after insert on realtime.messages
  for each row execute function realtime.test_double_replicate();
