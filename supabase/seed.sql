-- Seed data for `supabase db reset`. jobsys needs none: workers register their devices
-- when they start, and the settings rows come from the migrations. Left empty on purpose.
select 1;
