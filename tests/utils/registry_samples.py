"""Small registry CSV files shared by the registry tests: three schools in three
cities, five rooms, four booked periods, three calendar days."""

SCHOOLS = """code,name,county_code,stage,day_start,day_end,weekdays
S1,杭州市西湖区第一小学,330106,primary,07:30,17:30,12345
S2,桐庐县第一初级中学,330122,junior,,,
S3,龙港市第一高级中学,330383,senior,07:00,18:00,123456
"""
ROOMS = """school_code,room_code,name,type,building_code,building_name,capacity,floor_area_m2,new_style,lux_factor,teaching_space
S1,A101,一年级(1)班,classroom,A,教学楼,45,68,,1.0,
S1,A102,一年级(2)班,classroom,A,,44,66,0,0.9,1
S1,B201,科学实验室,lab,B,综合楼,48,92,1,0.92,
S1,B301,图书馆,library,B,,120,240,,,0
S2,N1,未来教室,new_style,,,40,96,,1.1,
"""
TIMETABLE = """school_code,room_code,weekday,start,end,label
S1,A101,1,08:00,08:40,第1节
S1,A101,1,8:50,09:30,第2节
S1,A101,2,08:00,08:40,第1节
S1,B201,3,13:30,14:10,科学
"""
CALENDAR = """date,kind,school_code,label
2026-10-01,holiday,,国庆节
2026-10-10,workday,,国庆节调休上班
2026-11-12,holiday,S1,校运动会
"""
