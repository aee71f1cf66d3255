"""The registry: regions (GB/T 2260), schools, buildings, rooms, timetables, school
calendars and which room each device is in, with CSV import for all of them."""
